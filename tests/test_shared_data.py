"""Integration on the real RSNA films in ../shared/datasets (skipped cleanly when absent)."""

from pathlib import Path

import numpy as np
import pytest

from boneage.kernel.config import FetchParams
from boneage.imaging.decoding import decode, read_film
from boneage.imaging.transforms import (ImagingSettings, crop_to_hand, hand_mask, normalise_contrast,
                             prepare, resize)
from boneage.data.sources import fetch
from boneage.data.store import build_store, open_store

pytestmark = pytest.mark.shared_data

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
FULLRES = SHARED / "rsna-bone-age-fullres-sample"
SMALL = SHARED / "rsna-bone-age-100px"


def _need(folder: Path) -> None:
    if not (folder / "boneage-training-dataset.csv").is_file():
        pytest.skip(f"{folder} not present")


def test_fullres_films_are_read_cropped_to_the_hand_and_padded(tmp_path):
    _need(FULLRES)
    fetch(FetchParams(source=str(FULLRES)), tmp_path / "raw")
    settings = ImagingSettings(size=128, resize="pad", crop="hand", contrast="percentile")
    summary = build_store(tmp_path / "raw", tmp_path / "prepared", settings, workers=2,
                          on_error="fail")
    assert summary["n_films"] == 36 and summary["n_failed"] == 0
    store = open_store(tmp_path / "prepared")
    films = np.asarray(store.images)
    assert films.shape == (36, 128, 128)
    # Portrait films padded to a square: the outer columns are black padding on every film.
    assert films[:, :, :3].max() == 0 and films[:, :, -3:].max() == 0
    # The hand fills the frame's height after the crop, and has bone-bright pixels.
    rows_with_hand = (films > 40).any(axis=2).mean(axis=1)
    assert rows_with_hand.min() > 0.8
    assert np.percentile(films, 99) > 200


def test_hand_mask_finds_one_large_hand_on_fullres_films():
    _need(FULLRES)
    for path in sorted((FULLRES / "boneage-training-dataset").glob("*.png"))[:5]:
        image = decode(path.read_bytes(), path.name)
        share = hand_mask(image).mean()
        assert 0.15 < share < 0.8, f"{path.name}: hand covers {share:.0%} of the film"


def test_fullres_films_prepared_from_a_reduced_copy_match_the_full_resolution_path():
    """prepare() reduces a full-resolution film before the crop and stretch (speed); the result
    stays what those steps give on every pixel."""
    _need(FULLRES)
    settings = ImagingSettings(size=96, crop="hand")
    for path in sorted((FULLRES / "boneage-training-dataset").glob("*.png"))[:5]:
        data = path.read_bytes()
        full = resize(normalise_contrast(crop_to_hand(decode(data)), settings), settings)
        slow = np.clip(np.round(full * 255.0), 0, 255).astype(int)
        difference = np.abs(prepare(read_film(data), settings).astype(int) - slow)
        assert difference.mean() < 4, f"{path.name}: mean difference {difference.mean():.1f}"
        assert np.median(difference) <= 3, path.name


def test_whole_100px_set_fetches_and_packs(tmp_path):
    _need(SMALL)
    report = fetch(FetchParams(source=str(SMALL)), tmp_path / "raw")
    assert report.n_written == 11_611
    summary = build_store(tmp_path / "raw", tmp_path / "prepared",
                          ImagingSettings(size=64, crop="hand"), workers=2)
    assert summary["n_films"] + summary["n_failed"] == 11_611
    assert summary["n_failed"] == 0
    assert (tmp_path / "prepared" / "films.npy").stat().st_size < 11_611 * 64 * 64 + 4096


def test_fullres_films_decode_to_opencvs_pixels():
    """The faster grey-PNG decoder reads the real RSNA films exactly as OpenCV does."""
    import cv2

    from boneage.imaging import decoding

    _need(FULLRES)
    for path in sorted((FULLRES / "boneage-training-dataset").glob("*.png"))[:6]:
        data = path.read_bytes()
        expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if decoding._is_plain_grey_png(data):
            np.testing.assert_array_equal(decoding._decode_grey_png(data, path.name), expected)
        if expected.ndim == 3 and expected.shape[2] == 4:
            expected = expected[..., :3]  # the alpha plane is dropped: the film is its colours
        np.testing.assert_array_equal(decoding.decode_raw(data, path.name), expected)
