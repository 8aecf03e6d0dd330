"""Tests of the synthetic hand radiographs (boneage.data.phantom).

They check the contract others code against (shapes, determinism, labels), that the
maturity follows the reference timeline (shared/reference/hand-maturation.md) and is
visible in the pixels, and that no trivial global cue gives the age away.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from boneage.data import phantom
from boneage.data.phantom import (
    CARPALS,
    TIMELINE,
    SyntheticFilm,
    bone_map,
    generate,
    hand_growth,
    render_film,
    structure_states,
    wrist_box,
)


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("height", [320, 160, 97, 64])
def test_render_film_shape_dtype_portrait(height):
    img = render_film(100.0, True, np.random.default_rng(0), height)
    assert img.dtype == np.uint8
    assert img.shape == (height, round(height * 4 / 5))
    assert img.shape[0] > img.shape[1]
    assert img.std() > 5  # not blank


def test_render_film_rejects_tiny_height():
    with pytest.raises(ValueError):
        render_film(100.0, True, np.random.default_rng(0), 8)


def test_generate_fields_and_ids():
    films = list(generate(5, height=64, seed=3))
    assert [f.id for f in films] == [f"syn-{i:06d}" for i in range(5)]
    for f in films:
        assert isinstance(f, SyntheticFilm)
        assert f.image.shape == (64, 51) and f.image.dtype == np.uint8
        assert isinstance(f.boneage, float) and f.boneage == round(f.boneage)
        assert isinstance(f.male, bool)
    with pytest.raises(Exception):
        films[0].boneage = 3.0  # frozen


def test_generate_is_deterministic_by_seed():
    a = list(generate(4, height=64, seed=11))
    b = list(generate(4, height=64, seed=11))
    c = list(generate(4, height=64, seed=12))
    for x, y in zip(a, b):
        assert (x.boneage, x.male) == (y.boneage, y.male)
        assert x.image.tobytes() == y.image.tobytes()
    assert any(x.image.tobytes() != z.image.tobytes() for x, z in zip(a, c))
    assert [x.boneage for x in a] != [z.boneage for z in c]


def test_prefix_of_bigger_set_equals_smaller_set():
    small = list(generate(3, height=64, seed=5))
    big = list(generate(7, height=64, seed=5))
    for x, y in zip(small, big):
        assert x.id == y.id and x.boneage == y.boneage and x.male == y.male
        assert np.array_equal(x.image, y.image)


def test_generate_count_zero_and_negative():
    assert list(generate(0)) == []
    with pytest.raises(ValueError):
        list(generate(-1))


def test_labels_range_and_sex_balance():
    n = 400
    films = list(generate(n, height=32, seed=1))
    ages = np.array([f.boneage for f in films])
    males = np.array([f.male for f in films])
    assert ages.min() >= 1 and ages.max() <= 228
    assert np.all(ages == np.round(ages))
    # uniform over 1..228: mean ~114.5 (sd of the mean ~3.3), both ends reached
    assert 100 < ages.mean() < 130
    assert ages.min() < 15 and ages.max() > 214
    assert 0.42 < males.mean() < 0.58

    short = [f.boneage for f in generate(50, height=32, seed=1, max_age_months=24.0)]
    assert min(short) >= 1 and max(short) <= 24


def test_equal_rng_states_share_nuisances():
    """Two films from equal rng states differ only by maturity; sex is an input."""
    a = render_film(120.0, False, np.random.default_rng(42), 160)
    b = render_film(120.0, False, np.random.default_rng(42), 160)
    c = render_film(120.0, True, np.random.default_rng(42), 160)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


# ----------------------------------------------------------------------------- timeline


def test_timeline_girls_are_earlier():
    for name, t in TIMELINE.items():
        assert t.appear_f <= t.appear_m, name
        if t.fuse_f is not None:
            assert t.fuse_f <= t.fuse_m, name
            assert t.appear_f < t.fuse_f, name


@pytest.mark.parametrize("male", [False, True])
def test_timeline_order(male):
    appear = {n: TIMELINE[n].appear(male) for n in CARPALS}
    assert max(appear["capitate"], appear["hamate"]) < min(
        v for k, v in appear.items() if k not in ("capitate", "hamate"))
    assert appear["pisiform"] == max(appear.values())
    assert appear["triquetrum"] < appear["lunate"] < appear["scaphoid"]
    fuse = {n: TIMELINE[n].fuse(male) for n in ("dp3", "pp3", "mp3", "mc3", "ulna", "radius")}
    assert fuse["dp3"] < fuse["pp3"] == fuse["mp3"] == fuse["mc3"] < fuse["ulna"] < fuse["radius"]


def test_reference_checkpoints():
    boy = lambda months: structure_states(months, True)  # noqa: E731
    girl = lambda months: structure_states(months, False)  # noqa: E731
    # carpals
    assert boy(6)["capitate"].present and boy(6)["hamate"].present
    assert not boy(12)["triquetrum"].present and boy(48)["triquetrum"].present
    assert not boy(60)["pisiform"].present and boy(168)["pisiform"].present
    assert girl(120)["pisiform"].present and not boy(120)["pisiform"].present
    # epiphyses
    assert not boy(6)["radius"].present and boy(24)["radius"].present
    assert not boy(72)["ulna"].present and boy(96)["ulna"].present
    # puberty sign
    assert not girl(120)["sesamoid"].present and girl(144)["sesamoid"].present
    assert not boy(144)["sesamoid"].present and boy(168)["sesamoid"].present
    # fusion: distal radius last
    assert not boy(144)["radius"].fused and boy(228)["radius"].fused
    assert not girl(180)["radius"].fused and girl(210)["radius"].fused
    assert boy(192)["dp3"].fused and not boy(192)["pp3"].fused and not boy(192)["radius"].fused
    assert girl(168)["dp3"].fused and not boy(168)["dp3"].fused


def test_stage_grows_with_age_and_jitter_shifts_it():
    names = ("capitate", "scaphoid", "radius", "pp3")
    prev = {n: -1.0 for n in names}
    for months in range(1, 229, 12):
        st = structure_states(months, True)
        for n in names:
            assert st[n].stage >= prev[n]
            prev[n] = st[n].stage
    assert structure_states(140, True, appear_shift={"pisiform": -6.0})["pisiform"].present
    assert not structure_states(140, True)["pisiform"].present
    assert structure_states(220, True, fuse_shift={"radius": -4.0})["radius"].fused
    assert not structure_states(220, True)["radius"].fused


def test_hand_roughly_doubles_from_1_to_15_years():
    for male in (False, True):
        ratio = hand_growth(180, male) / hand_growth(12, male)
        assert 1.7 < ratio < 2.3
    assert hand_growth(228, False) < hand_growth(228, True)


# ------------------------------------------------------------------ maturity is visible


def _wrist_mass(months, male, seed, height=160):
    rows, cols = wrist_box(height)
    return float(bone_map(months, male, np.random.default_rng(seed), height)[rows, cols].sum())


def test_wrist_bone_grows_with_age_at_fixed_biology():
    for seed in range(3):
        mass = [_wrist_mass(m, True, seed) for m in (12, 48, 96, 144, 192)]
        assert all(a < b for a, b in zip(mass, mass[1:])), mass
        assert mass[-1] > 3 * mass[0]


def test_maturity_change_beats_nuisance_change_in_wrist():
    """Same rng (same nuisances): 24 vs 180 months differs in the wrist far more than two
    equally old hands with different biology/pose (a different rng) do."""
    h = 160
    rows, cols = wrist_box(h)

    def wrist(months, seed):
        return bone_map(months, True, np.random.default_rng(seed), h)[rows, cols]

    for seed in range(3):
        maturity = np.abs(wrist(180, seed) - wrist(24, seed)).mean()
        nuisance = np.abs(wrist(180, seed) - wrist(180, seed + 100)).mean()
        assert maturity > 2.0 * nuisance, (maturity, nuisance)


def test_girls_look_more_mature_than_boys_at_same_bone_age():
    for months in (60, 120, 168):
        for seed in range(3):
            girl, boy = _wrist_mass(months, False, seed), _wrist_mass(months, True, seed)
            assert girl > boy * 1.03, (months, seed, girl, boy)


def test_growth_plates_close():
    """Open growth plates split each epiphysis from its shaft (and young joints are wide);
    after fusion the bones are single pieces, so the count of separate bone pieces drops
    from ~45 at 10 y to ~19 at 19 y (boy)."""
    h = 480
    for seed in range(3):
        st_young = structure_states(120, True)
        st_old = structure_states(228, True)
        assert st_young["pp3"].present and not st_young["pp3"].fused and st_old["radius"].fused

        def pieces(months):
            bone = bone_map(months, True, np.random.default_rng(seed), h)
            return cv2.connectedComponents((bone > 0.5).astype(np.uint8), connectivity=4)[0]

        young, old = pieces(120), pieces(228)
        assert young > old + 15, (seed, young, old)


# ------------------------------------------------------------------ no trivial global cue


@pytest.fixture(scope="module")
def sample():
    films = list(generate(300, height=96, seed=2024))
    ages = np.array([f.boneage for f in films])
    return films, ages


def _hand_area_fraction(img):
    blur = cv2.GaussianBlur(img, (5, 5), 0)
    _, mask = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float((mask > 0).mean())


def test_no_global_brightness_cue(sample):
    films, ages = sample
    means = np.array([f.image.mean() for f in films])
    assert abs(np.corrcoef(ages, means)[0, 1]) < 0.3
    stds = np.array([f.image.std() for f in films])
    assert abs(np.corrcoef(ages, stds)[0, 1]) < 0.4


def test_no_hand_size_cue(sample):
    films, ages = sample
    area = np.array([_hand_area_fraction(f.image) for f in films])
    assert abs(np.corrcoef(ages, area)[0, 1]) < 0.4


def test_nuisances_vary(sample):
    films, _ = sample
    means = np.array([f.image.mean() for f in films])
    assert means.std() > 15  # exposure/background vary a lot
    # both looks: dark-background crops and grey whole plates
    border = np.array([np.median(np.r_[f.image[:4].ravel(), f.image[:, :3].ravel()])
                       for f in films])
    assert (border < 30).mean() > 0.2 and (border > 60).mean() > 0.2


def test_module_exports():
    for name in phantom.__all__:
        assert hasattr(phantom, name)


def test_a_slice_from_start_equals_the_same_films_of_the_whole_run():
    whole = list(phantom.generate(6, height=48, seed=5))
    part = list(phantom.generate(3, height=48, seed=5, start=2))
    assert [f.id for f in part] == [f.id for f in whole[2:5]]
    for a, b in zip(part, whole[2:5]):
        assert np.array_equal(a.image, b.image) and a.boneage == b.boneage and a.male == b.male
