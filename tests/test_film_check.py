"""The film check (issue 14): hand radiographs pass, everything else is refused with a reason.

Small material made here: phantom films (boneage.data.phantom), blanks, noise, gradients, drawn
text and shapes, a colour image. Acceptance rates on real data are bench/film_check.py's
job; one test reads a handful of RSNA films when ../shared/datasets is there.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from boneage.imaging.film_check import (
    MAX_COLOUR_FRACTION,
    FilmCheck,
    check_film,
    colour_fraction,
    colour_fraction_of,
)
from boneage.imaging.decoding import read_film
from boneage.data.phantom import generate, render_film

SMALL = (Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
         / "rsna-bone-age-100px" / "boneage-training-dataset")


def _png(array: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", array)
    assert ok
    return buffer.tobytes()


def _jpeg(array: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buffer.tobytes()


@pytest.fixture(scope="module")
def phantoms() -> list[np.ndarray]:
    """The first ten films of the default pipeline's data (200 px, seed 0)."""
    return [film.image for film in generate(10, height=200, seed=0)]


def _page(dark: bool = False) -> np.ndarray:
    page = np.full((800, 640), 20 if dark else 245, np.uint8)
    for row, y in enumerate(range(40, 780, 30)):
        cv2.putText(page, f"bone age report line {row} patient hand radiograph findings",
                    (20, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 235 if dark else 15, 1, cv2.LINE_AA)
    return page


# ----------------------------------------------------------------------------- accepted


def test_phantom_films_are_accepted_upright(phantoms):
    for i, film in enumerate(phantoms):
        check = check_film(film)
        assert check.accepted, (i, check.reasons, check.scores)
        assert not check.inverted, (i, check.scores)
        assert check.reasons == [] and check.failed == ()


def test_phantom_films_at_other_sizes_and_depths_are_accepted(phantoms):
    film = phantoms[0]
    full = cv2.resize(film, (1600, 2000), interpolation=cv2.INTER_CUBIC)  # full resolution
    assert check_film(full).accepted
    twelve_bit = (film.astype(np.uint16) * 16)  # a 12-bit film in a 16-bit PNG
    assert check_film(twelve_bit).accepted
    assert check_film(film.astype(np.float32) / 255.0).accepted  # read_film's float [0, 1]
    decoded = read_film(_png(film)).image
    assert check_film(decoded, colour=colour_fraction(_png(film))).accepted
    squashed = cv2.resize(film, (100, 100), interpolation=cv2.INTER_AREA)  # like RSNA 100 px
    assert check_film(squashed).accepted
    grey_bgr = cv2.cvtColor(film, cv2.COLOR_GRAY2BGR)  # a grey film stored in colour
    assert check_film(grey_bgr).accepted


def test_inverted_phantom_films_are_accepted_and_flagged(phantoms):
    for i, film in enumerate(phantoms[:5]):
        check = check_film(255 - film)
        assert check.accepted, (i, check.reasons)
        assert check.inverted, (i, check.scores)
        assert "inverted" in check.message
    assert check_film(1.0 - phantoms[0].astype(np.float32) / 255.0).inverted


def test_the_check_is_deterministic(phantoms):
    first, second = check_film(phantoms[3]), check_film(phantoms[3].copy())
    assert first == second


# ----------------------------------------------------------------------------- refused


@pytest.mark.parametrize("level", [0, 128, 255])
def test_blank_frames_are_refused_as_blank(level):
    check = check_film(np.full((1024, 800), level, np.uint8))
    assert not check.accepted and check.failed == ("blank",)
    assert "blank" in check.reasons[0]


def test_a_nearly_black_frame_with_sensor_noise_is_refused():
    rng = np.random.default_rng(0)
    frame = np.clip(rng.normal(3, 1.5, (600, 480)), 0, 255).astype(np.uint8)
    check = check_film(frame)
    assert not check.accepted
    assert check.failed[0] in ("blank", "noise")


def test_random_noise_is_refused_as_noise():
    rng = np.random.default_rng(1)
    check = check_film(rng.integers(0, 256, (512, 400), dtype=np.uint8))
    assert not check.accepted and check.failed[0] == "noise"
    assert "noise" in check.reasons[0]


@pytest.mark.parametrize("axis", [0, 1])
def test_smooth_gradients_are_refused_as_smooth(axis):
    ramp = np.linspace(0, 255, 800 if axis else 1024, dtype=np.float32)
    frame = np.tile(ramp, (1024, 1)) if axis else np.tile(ramp[:, None], (1, 800))
    check = check_film(frame.astype(np.uint8))
    assert not check.accepted and check.failed[0] == "smooth"
    assert "gradient" in check.reasons[0]


@pytest.mark.parametrize("dark", [False, True])
def test_text_pages_are_refused_as_text(dark):
    check = check_film(_page(dark))
    assert not check.accepted and "text" in check.failed
    assert any("text" in reason for reason in check.reasons)


def test_a_colour_photograph_is_refused_as_colour():
    yy, xx = np.mgrid[:300, :400].astype(np.float32)
    photo = np.stack([xx / 400 * 255, yy / 300 * 255, 255 - xx / 400 * 255], axis=2)
    photo = cv2.GaussianBlur(photo, (0, 0), 3).astype(np.uint8)
    data = _jpeg(photo)
    colour = colour_fraction(data)
    assert colour > MAX_COLOUR_FRACTION
    check = check_film(read_film(data).image, colour=colour)
    assert not check.accepted and check.failed[0] == "colour"
    assert "colour photograph" in check.reasons[0]
    assert check_film(photo).failed[0] == "colour"  # colour measured from a BGR array


def test_colour_fraction_of_grey_files_is_zero(phantoms):
    film = phantoms[0]
    assert colour_fraction(_png(film)) == 0.0  # grey PNG: from the header
    assert colour_fraction(_jpeg(film)) == 0.0  # one-component JPEG: from the header
    assert colour_fraction(_png(cv2.cvtColor(film, cv2.COLOR_GRAY2BGR))) == 0.0  # RGB, grey
    assert colour_fraction(b"\0" * 128 + b"DICM" + b"\0" * 64) == 0.0
    assert colour_fraction(b"") == 0.0
    assert colour_fraction_of(film) == 0.0


@pytest.mark.parametrize("shape", ["ellipse", "chest", "flat hand"])
def test_blobs_bodies_and_flat_silhouettes_are_refused_as_no_hand(shape):
    h, w = 640, 512
    img = np.full((h, w), 15, np.uint8)
    if shape == "ellipse":  # a CT/MR slice, roughly
        cv2.ellipse(img, (w // 2, h // 2), (w // 3, h // 3), 15, 0, 360, 180, -1)
        cv2.circle(img, (w // 2, h // 2), w // 10, 240, -1)
    elif shape == "chest":
        cv2.ellipse(img, (w // 2, int(h * 0.55)), (int(w * 0.42), int(h * 0.5)), 0, 0, 360, 180,
                    -1)
        for side in (-1, 1):
            cv2.ellipse(img, (w // 2 + side * w // 5, int(h * 0.45)), (w // 7, h // 4), 0, 0,
                        360, 60, -1)
        cv2.rectangle(img, (w // 2 - 12, 0), (w // 2 + 12, h), 230, -1)
    else:  # a drawn hand outline, flat: a shape, not a radiograph
        cv2.ellipse(img, (w // 2, int(h * 0.62)), (int(w * 0.2), int(h * 0.17)), 0, 0, 360, 200,
                    -1)
        cv2.rectangle(img, (int(w * 0.38), int(h * 0.7)), (int(w * 0.62), h), 200, -1)
        for k in range(4):
            x = int(w * (0.36 + 0.09 * k))
            cv2.line(img, (x, int(h * 0.5)), (x + int((k - 1.5) * 20), int(h * 0.2)), 200, 26)
        cv2.line(img, (int(w * 0.3), int(h * 0.65)), (int(w * 0.12), int(h * 0.45)), 200, 26)
    img = cv2.GaussianBlur(img, (0, 0), 2)
    check = check_film(img)
    assert not check.accepted
    assert check.failed == ("no_hand",), check.failed
    assert check.reasons[0].startswith("no hand found")


def test_a_corner_of_a_film_without_the_hand_is_refused(phantoms):
    corner = cv2.resize(phantoms[0][:50, :40], (400, 500), interpolation=cv2.INTER_CUBIC)
    assert not check_film(corner).accepted


def test_tiny_and_strip_shaped_images_are_refused_for_their_size(phantoms):
    assert check_film(phantoms[0][:30, :30]).failed == ("size",)
    strip = np.tile(np.linspace(0, 255, 2000, dtype=np.float32), (120, 1)).astype(np.uint8)
    assert check_film(strip).failed == ("size",)


def test_a_film_that_is_not_2d_is_a_programming_error():
    with pytest.raises(ValueError, match="2-D"):
        check_film(np.zeros((4, 64, 64), np.uint8))


# ----------------------------------------------------------------------------- the result


def test_result_is_frozen_and_serialisable(phantoms):
    check = check_film(phantoms[1])
    with pytest.raises(AttributeError):
        check.accepted = False  # type: ignore[misc]
    data = json.loads(json.dumps(check.to_dict()))
    assert data["accepted"] is True and data["inverted"] is False and data["failed"] == []
    for key in ("spread", "noise", "edges", "gaps", "solidity", "local_contrast", "texture",
                "background_smooth", "background_edges"):
        assert isinstance(data["scores"][key], (int, float)), key
    refused = check_film(np.zeros((200, 160), np.uint8)).to_dict()
    assert refused["accepted"] is False and refused["failed"] == ["blank"]
    assert refused["reasons"] and isinstance(FilmCheck(False, False), FilmCheck)


def test_every_refusal_says_why():
    rng = np.random.default_rng(3)
    cases = [np.zeros((300, 240), np.uint8), rng.integers(0, 256, (300, 240), dtype=np.uint8),
             np.tile(np.linspace(0, 255, 240, dtype=np.float32), (300, 1)).astype(np.uint8),
             _page()]
    for image in cases:
        check = check_film(image)
        assert not check.accepted
        assert len(check.reasons) == len(check.failed) >= 1
        assert check.message.startswith("not read: ")


# ----------------------------------------------------------------------------- real films


@pytest.mark.shared_data
def test_a_handful_of_rsna_films_are_accepted_upright_and_inverted():
    if not SMALL.is_dir():
        pytest.skip(f"{SMALL} not present")
    paths = sorted(SMALL.glob("*.png"))[:40:4]
    assert paths
    for path in paths:
        data = path.read_bytes()
        image = read_film(data, path.name).image
        check = check_film(image, colour=colour_fraction(data))
        assert check.accepted and not check.inverted, (path.name, check.reasons)
        flipped = check_film(1.0 - image)
        assert flipped.accepted and flipped.inverted, path.name


def test_render_film_of_any_age_is_accepted():
    rng = np.random.default_rng(11)
    accepted = [check_film(render_film(age, age % 2 == 0, rng, 200)).accepted
                for age in (6, 30, 60, 100, 140, 180, 220)]
    assert sum(accepted) >= 6, accepted


# ----------------------------------------------------------------------------- issue 22


def _posterise(film: np.ndarray, levels: int) -> np.ndarray:
    """``film`` cut to ``levels`` grey levels spread over its own range."""
    low, high = float(film.min()), float(film.max())
    step = (high - low) / levels
    index = np.clip(((film.astype(np.float64) - low) / step).astype(int), 0, levels - 1)
    return (low + (index + 0.5) * step).astype(film.dtype)


@pytest.mark.parametrize("levels", [2, 4, 8])
@pytest.mark.parametrize("depth", [8, 16])
def test_a_posterised_film_is_refused_as_too_few_grey_levels(phantoms, levels, depth):
    film = phantoms[1] if depth == 8 else phantoms[1].astype(np.uint16) * 257
    assert check_film(film).accepted  # the original reads
    check = check_film(_posterise(film, levels))
    assert not check.accepted and "levels" in check.failed, check.scores
    assert "too few grey levels to read" in check.message
    assert check.scores["hand_levels"] <= levels


def test_a_clipped_film_is_refused_as_most_of_the_hand_at_one_level(phantoms):
    film = phantoms[2]
    assert check_film(film).accepted
    hand_floor = np.percentile(film, 60)  # burnt out: everything above the 60th percentile
    clipped = np.minimum(film, hand_floor).astype(np.uint8)
    check = check_film(clipped)
    assert not check.accepted and "levels" in check.failed, check.scores
    assert check.scores["hand_one_level"] > 0.5


def test_the_levels_of_accepted_films_clear_the_thresholds(phantoms):
    from boneage.imaging.film_check import MAX_HAND_ONE_LEVEL, MIN_HAND_LEVELS

    for film in phantoms:
        check = check_film(film)
        assert check.accepted
        assert check.scores["hand_levels"] >= 3 * MIN_HAND_LEVELS
        assert check.scores["hand_one_level"] <= MAX_HAND_ONE_LEVEL / 2
