"""train: fit the model chosen by the ``train`` params; curves go to dvclive."""

import argparse
from pathlib import Path

from boneage.config import load_section
from boneage.runner import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--store", type=Path, default=Path("data/prepared"))
    parser.add_argument("--split", type=Path, default=Path("data/split"))
    parser.add_argument("--out", type=Path, default=Path("models/trained"))
    parser.add_argument("--live", type=Path, default=Path("metrics/train"))
    args = parser.parse_args()

    from boneage.training import run_training

    run_training(args.store, args.split, load_section("train", args.params), args.out, args.live)


if __name__ == "__main__":
    run(main)
