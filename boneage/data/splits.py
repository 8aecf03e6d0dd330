"""Seeded train/val/test split stratified by age band and sex, and optional k folds.

Stratifying keeps every split's age and sex mix like the whole set's, so a test MAE is
not flattered by an easy age range. The allocation is done per stratum with largest
remainders, so tiny strata (one film of a rare age band) never crash the split, and
the same seed always gives the same id lists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from boneage.kernel.artifacts import FOLDS_CSV, SPLIT_FILES
from boneage.kernel.errors import DataError

SPLITS = ("train", "val", "test")


def strata(boneage: pd.Series, male: pd.Series, band_months: float) -> pd.Series:
    """Stratum label 'band:sex' of each film."""
    band = np.floor(boneage.to_numpy(dtype=float) / band_months).astype(int)
    return pd.Series([f"{b}:{int(m)}" for b, m in zip(band, male.to_numpy())], index=boneage.index)


def _allocate(sizes: np.ndarray, fraction: float) -> np.ndarray:
    """Integer counts per stratum summing to round(fraction * total), by largest remainder."""
    exact = sizes * fraction
    counts = np.floor(exact).astype(int)
    short = int(round(fraction * sizes.sum())) - counts.sum()
    if short > 0:
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[:short]] += 1
    return np.minimum(counts, sizes)


def split_ids(index: pd.DataFrame, *, val: float, test: float, seed: int,
              band_months: float = 24.0) -> dict[str, list[str]]:
    """Split the films of ``index`` (columns id, boneage, male) into train/val/test id lists."""
    if index["id"].duplicated().any():
        dupes = index.loc[index["id"].duplicated(), "id"].tolist()[:5]
        raise DataError(f"duplicate ids in the film index: {dupes}")
    if len(index) < 3:
        raise DataError(f"need at least 3 films to split into train/val/test, got {len(index)}")
    ordered = index.sort_values("id", kind="stable").reset_index(drop=True)
    labels = strata(ordered["boneage"], ordered["male"], band_months)
    groups = sorted(labels.unique())
    members = [np.flatnonzero(labels.to_numpy() == g) for g in groups]
    rng = np.random.default_rng(seed)
    members = [rng.permutation(m) for m in members]
    sizes = np.array([len(m) for m in members])
    n_test = _allocate(sizes, test)
    n_val = _allocate(sizes - n_test, val / (1 - test))
    out: dict[str, list[int]] = {name: [] for name in SPLITS}
    for m, t, v in zip(members, n_test, n_val):
        out["test"].extend(m[:t])
        out["val"].extend(m[t:t + v])
        out["train"].extend(m[t + v:])
    ids = ordered["id"].to_numpy()
    result = {name: sorted(ids[rows].tolist()) for name, rows in out.items()}
    for name in SPLITS:
        if not result[name]:
            raise DataError(f"the {name} split is empty with {len(index)} films; "
                            "use more films or larger split fractions")
    return result


def fold_ids(index: pd.DataFrame, *, folds: int, seed: int,
             band_months: float = 24.0) -> pd.DataFrame:
    """Assign each film a fold 0..folds-1, stratified like :func:`split_ids`."""
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if len(index) < folds:
        raise DataError(f"cannot make {folds} folds from {len(index)} films")
    ordered = index.sort_values("id", kind="stable").reset_index(drop=True)
    labels = strata(ordered["boneage"], ordered["male"], band_months).to_numpy()
    rng = np.random.default_rng([seed, folds])
    fold = np.empty(len(ordered), dtype=int)
    offset = 0
    for group in sorted(set(labels)):
        rows = rng.permutation(np.flatnonzero(labels == group))
        # Continue the round robin across strata so fold sizes differ by at most one.
        fold[rows] = (np.arange(len(rows)) + offset) % folds
        offset = (offset + len(rows)) % folds
    return pd.DataFrame({"id": ordered["id"], "fold": fold})


def write_ids(path: Path, ids: list[str]) -> None:
    path.write_text("".join(f"{i}\n" for i in ids))


def read_ids(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing; run the split stage first")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def write_split(out_dir: str | Path, index: pd.DataFrame, *, val: float, test: float, seed: int,
                band_months: float, folds: int = 0) -> dict[str, int]:
    """Write ``train.txt``, ``val.txt``, ``test.txt`` (and ``folds.csv``) to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = split_ids(index, val=val, test=test, seed=seed, band_months=band_months)
    for name, ids in result.items():
        write_ids(out_dir / SPLIT_FILES[name], ids)
    folds_path = out_dir / FOLDS_CSV
    if folds:
        pool = index[index["id"].isin(set(result["train"]) | set(result["val"]))]
        fold_ids(pool, folds=folds, seed=seed, band_months=band_months).to_csv(folds_path,
                                                                              index=False)
    elif folds_path.exists():
        folds_path.unlink()
    return {name: len(ids) for name, ids in result.items()}


def training_ids(split_dir: str | Path, fold: int = -1) -> tuple[list[str], list[str]]:
    """(train ids, validation ids): the train/val split, or fold ``fold`` held out of train+val."""
    split_dir = Path(split_dir)
    if fold < 0:
        return read_ids(split_dir / SPLIT_FILES["train"]), read_ids(split_dir / SPLIT_FILES["val"])
    folds_path = split_dir / FOLDS_CSV
    if not folds_path.is_file():
        raise DataError(f"train.fold={fold} needs {folds_path}; set split.folds >= 2")
    folds = pd.read_csv(folds_path, dtype={"id": str})
    n_folds = int(folds["fold"].max()) + 1
    if fold >= n_folds:
        raise DataError(f"train.fold={fold} but split.folds={n_folds} (folds are 0..{n_folds - 1})")
    held = folds["fold"] == fold
    return folds.loc[~held, "id"].tolist(), folds.loc[held, "id"].tolist()
