"""evaluate: test-split metrics beside the median baseline, plot data and plots."""

import argparse
from pathlib import Path

from boneage.kernel.config import load_section
from boneage.kernel.runner import add_verbose_flag, import_tensorflow, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, default=Path("models/trained"))
    parser.add_argument("--store", type=Path, default=Path("data/prepared"))
    parser.add_argument("--split", type=Path, default=Path("data/split"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/evaluate.json"))
    parser.add_argument("--plots", type=Path, default=Path("plots"))
    add_verbose_flag(parser)
    args = parser.parse_args()

    import_tensorflow(args.verbose)  # its start-up lines only when asked for
    from boneage.learning.evaluation import run_evaluation

    params = load_section("evaluate", args.params)
    run_evaluation(args.model, args.store, args.split, params.age_bands_months, args.metrics,
                   args.plots, tta=params.tta)


if __name__ == "__main__":
    run(main)
