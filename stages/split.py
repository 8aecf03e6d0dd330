"""split: seeded, stratified train/val/test id lists (and k folds) from the packed store."""

import argparse
from pathlib import Path

import pandas as pd

from boneage.kernel.config import load_section
from boneage.kernel.runner import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--index", type=Path, default=Path("data/prepared/index.csv"))
    parser.add_argument("--out", type=Path, default=Path("data/split"))
    args = parser.parse_args()

    from boneage.data.splits import write_split

    params = load_section("split", args.params)
    index = pd.read_csv(args.index, dtype={"id": str})
    counts = write_split(args.out, index, val=params.val, test=params.test, seed=params.seed,
                         band_months=params.age_band_months, folds=params.folds)
    print(f"split written to {args.out}: {counts}")


if __name__ == "__main__":
    run(main)
