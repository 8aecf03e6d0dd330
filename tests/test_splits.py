"""Seeded, stratified train/val/test split and k folds over train+val."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from boneage.kernel.errors import DataError
from boneage.data.splits import (
    SPLITS,
    fold_ids,
    read_ids,
    split_ids,
    strata,
    training_ids,
    write_split,
)

BAND = 24.0


def make_index(n: int = 600, seed: int = 0, male_share: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # skewed ages, so that an unstratified split would easily drift
    ages = np.clip(rng.gamma(4.0, 30.0, n), 1, 228)
    return pd.DataFrame({
        "id": [f"{i:05d}" for i in rng.permutation(n)],
        "boneage": ages.round(1),
        "male": (rng.random(n) < male_share).astype(int),
    })


@pytest.fixture(scope="module")
def index() -> pd.DataFrame:
    return make_index()


@pytest.fixture(scope="module")
def split(index) -> dict[str, list[str]]:
    return split_ids(index, val=0.15, test=0.2, seed=42, band_months=BAND)


def labels_by_id(index: pd.DataFrame) -> pd.Series:
    labels = strata(index["boneage"], index["male"], BAND)
    labels.index = index["id"].to_numpy()
    return labels


# ----------------------------------------------------------------------------- strata


def test_strata_labels():
    labels = strata(pd.Series([0.0, 23.9, 24.0, 100.0]), pd.Series([0, 1, 1, 0]), 24.0)
    assert labels.tolist() == ["0:0", "0:1", "1:1", "4:0"]


# ----------------------------------------------------------------------------- split


def test_split_is_disjoint_and_complete(index, split):
    assert set(split) == set(SPLITS)
    sets = {name: set(ids) for name, ids in split.items()}
    assert sum(len(ids) for ids in split.values()) == len(index)
    assert sets["train"] | sets["val"] | sets["test"] == set(index["id"])
    assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"]
                or sets["val"] & sets["test"])
    for ids in split.values():
        assert ids == sorted(ids) and len(ids) == len(set(ids))


def test_split_sizes_follow_fractions(index, split):
    n = len(index)
    assert len(split["test"]) == round(0.2 * n)
    assert abs(len(split["val"]) - 0.15 * n) <= 1
    assert abs(len(split["train"]) - 0.65 * n) <= 1


def test_fractions_hold_within_each_stratum(index, split):
    labels = labels_by_id(index)
    sizes = labels.value_counts()
    assert len(sizes) >= 12  # many strata, several of them small
    for name, fraction, slack in (("test", 0.2, 1.0), ("val", 0.15, 1.0), ("train", 0.65, 2.0)):
        counts = labels.loc[split[name]].value_counts().reindex(sizes.index, fill_value=0)
        deviation = (counts - sizes * fraction).abs()
        assert deviation.max() < slack, (name, deviation.idxmax())


def test_stratification_keeps_sex_and_age_mix(index, split):
    whole_male = index["male"].mean()
    bands = (index.set_index("id")["boneage"] // 48).astype(int)
    whole_mix = bands.value_counts(normalize=True)
    for name, ids in split.items():
        part = index.set_index("id").loc[ids]
        assert abs(part["male"].mean() - whole_male) < 0.03, name
        mix = bands.loc[ids].value_counts(normalize=True).reindex(whole_mix.index, fill_value=0)
        assert (mix - whole_mix).abs().max() < 0.03, name
        assert abs(part["boneage"].mean() - index["boneage"].mean()) < 4.0, name


def test_same_seed_same_split_regardless_of_row_order(index, split):
    shuffled = index.sample(frac=1.0, random_state=7).reset_index(drop=True)
    assert split_ids(shuffled, val=0.15, test=0.2, seed=42, band_months=BAND) == split


def test_different_seed_different_split(index, split):
    other = split_ids(index, val=0.15, test=0.2, seed=43, band_months=BAND)
    assert other["test"] != split["test"]
    assert other["val"] != split["val"]
    assert len(other["test"]) == len(split["test"])


def test_tiny_strata_do_not_crash():
    index = make_index(40, seed=3)
    extra = pd.DataFrame({"id": ["lonely", "pair-a", "pair-b"], "boneage": [239.0, 500.0, 501.0],
                          "male": [1, 0, 0]})
    index = pd.concat([index, extra], ignore_index=True)
    result = split_ids(index, val=0.15, test=0.15, seed=1, band_months=BAND)
    everything = sorted(sum(result.values(), []))
    assert everything == sorted(index["id"])
    assert all(result[name] for name in SPLITS)


def test_all_singleton_strata():
    index = pd.DataFrame({"id": [f"f{i}" for i in range(12)],
                          "boneage": [24.0 * i + 1 for i in range(12)], "male": [0] * 12})
    result = split_ids(index, val=0.2, test=0.2, seed=0, band_months=BAND)
    assert sum(len(v) for v in result.values()) == 12
    assert len(result["test"]) == round(0.2 * 12)


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_too_few_films(n):
    index = make_index(n) if n else pd.DataFrame({"id": [], "boneage": [], "male": []})
    with pytest.raises(DataError, match=rf"got {n}$|{n} films"):
        split_ids(index, val=0.15, test=0.15, seed=0)


def test_duplicate_ids_are_refused(index):
    doubled = pd.concat([index, index.iloc[[4]]], ignore_index=True)
    with pytest.raises(DataError, match=index["id"].iloc[4]):
        split_ids(doubled, val=0.15, test=0.15, seed=0)


# ----------------------------------------------------------------------------- folds


@pytest.mark.parametrize("k", [2, 5, 7])
def test_folds_partition_and_balance(index, k):
    folds = fold_ids(index, folds=k, seed=42, band_months=BAND)
    assert sorted(folds["id"]) == sorted(index["id"])
    assert folds["id"].is_unique
    assert set(folds["fold"]) == set(range(k))
    sizes = folds["fold"].value_counts()
    assert sizes.max() - sizes.min() <= 1


def test_folds_are_stratified(index):
    folds = fold_ids(index, folds=5, seed=42, band_months=BAND).set_index("id")
    male = index.set_index("id")["male"]
    for k in range(5):
        ids = folds.index[folds["fold"] == k]
        assert abs(male.loc[ids].mean() - male.mean()) < 0.04


def test_folds_are_deterministic(index):
    first = fold_ids(index, folds=5, seed=42, band_months=BAND)
    again = fold_ids(index.sample(frac=1.0, random_state=1), folds=5, seed=42, band_months=BAND)
    pd.testing.assert_frame_equal(first, again)
    other = fold_ids(index, folds=5, seed=43, band_months=BAND)
    assert not first["fold"].equals(other["fold"])


def test_bad_fold_counts(index):
    with pytest.raises(ValueError, match="at least 2"):
        fold_ids(index, folds=1, seed=0)
    with pytest.raises(DataError, match="5 folds from 3 films"):
        fold_ids(index.head(3), folds=5, seed=0)


# ----------------------------------------------------------------------------- files


def test_write_split_with_folds(index, tmp_path):
    counts = write_split(tmp_path, index, val=0.15, test=0.2, seed=42, band_months=BAND, folds=4)
    result = {name: read_ids(tmp_path / f"{name}.txt") for name in SPLITS}
    assert counts == {name: len(ids) for name, ids in result.items()}
    assert result == split_ids(index, val=0.15, test=0.2, seed=42, band_months=BAND)
    folds = pd.read_csv(tmp_path / "folds.csv", dtype={"id": str})
    assert list(folds.columns) == ["id", "fold"]
    assert set(folds["id"]) == set(result["train"]) | set(result["val"])
    assert not set(folds["id"]) & set(result["test"])
    assert len(folds) == len(result["train"]) + len(result["val"])
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3]


def test_write_split_without_folds_removes_stale_file(index, tmp_path):
    write_split(tmp_path, index, val=0.15, test=0.2, seed=42, band_months=BAND, folds=3)
    assert (tmp_path / "folds.csv").is_file()
    write_split(tmp_path, index, val=0.15, test=0.2, seed=42, band_months=BAND, folds=0)
    assert not (tmp_path / "folds.csv").exists()
    assert (tmp_path / "train.txt").is_file()


def test_ids_keep_leading_zeros_through_files(tmp_path):
    index = make_index(60, seed=5)
    write_split(tmp_path, index, val=0.2, test=0.2, seed=0, band_months=BAND, folds=3)
    train, val = training_ids(tmp_path, fold=1)
    assert all(len(i) == 5 for i in train + val)
    assert set(train + val) <= set(index["id"])


def test_training_ids_without_fold(index, tmp_path):
    write_split(tmp_path, index, val=0.15, test=0.2, seed=42, band_months=BAND)
    train, val = training_ids(tmp_path)
    assert train == read_ids(tmp_path / "train.txt")
    assert val == read_ids(tmp_path / "val.txt")


def test_training_ids_with_fold(index, tmp_path):
    write_split(tmp_path, index, val=0.15, test=0.2, seed=42, band_months=BAND, folds=5)
    folds = pd.read_csv(tmp_path / "folds.csv", dtype={"id": str})
    pool = set(read_ids(tmp_path / "train.txt")) | set(read_ids(tmp_path / "val.txt"))
    held_out_union = set()
    for k in range(5):
        train, held = training_ids(tmp_path, fold=k)
        assert set(held) == set(folds.loc[folds["fold"] == k, "id"])
        assert not set(train) & set(held)
        assert set(train) | set(held) == pool
        held_out_union |= set(held)
    assert held_out_union == pool


def test_training_ids_bad_fold(index, tmp_path):
    write_split(tmp_path, index, val=0.15, test=0.2, seed=42, band_months=BAND, folds=3)
    with pytest.raises(DataError, match=r"train.fold=3 but split.folds=3"):
        training_ids(tmp_path, fold=3)
    (tmp_path / "folds.csv").unlink()
    with pytest.raises(DataError, match="folds.csv"):
        training_ids(tmp_path, fold=0)


def test_read_ids_missing_file(tmp_path):
    with pytest.raises(DataError, match="train.txt"):
        read_ids(tmp_path / "train.txt")


def test_read_ids_skips_blank_lines(tmp_path):
    (tmp_path / "x.txt").write_text("a\n\n b \nc\n")
    assert read_ids(tmp_path / "x.txt") == ["a", "b", "c"]
