"""``boneage`` command line: predict bone age for films with an exported model;
summarise cross-validation experiments."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from boneage.report import describe, format_months

DEFAULT_MODEL = Path("models/boneage")


def _predict(args: argparse.Namespace) -> int:
    from boneage.predictor import Predictor, expand_paths, parse_sex

    male = parse_sex(args.sex)
    predictor = Predictor(args.model, model_format=args.format)
    paths = expand_paths(args.paths)
    results = predictor.predict_paths(paths, male, progress=len(paths) > 20 and not args.json)
    rows = []
    for result in results:
        row = {"path": result.path, "sex": "M" if male else "F"}
        if result.error:
            row["error"] = result.error
        else:
            row["boneage_months"] = round(result.months, 1)
            row["boneage_text"] = format_months(result.months)
        rows.append(row)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for row in rows:
            if "error" in row:
                print(f"{row['path']}: not read: {row['error']}")
            else:
                print(f"{row['path']}: bone age {describe(row['boneage_months'])}")
    failed = sum("error" in row for row in rows)
    if failed:
        print(f"{failed} of {len(rows)} films could not be read", file=sys.stderr)
    return 1 if rows and failed == len(rows) else 0


def _crossval(args: argparse.Namespace) -> int:
    from boneage.crossval import exp_show, summarize, write_summary

    shown = json.loads(Path(args.from_json).read_text()) if args.from_json else exp_show()
    summary = summarize(shown, args.exps)
    out = write_summary(summary, args.out)
    print(f"{len(summary['folds_run'])} folds ({', '.join(summary['runs'].values())}) -> {out}")
    if summary["missing_folds"]:
        print(f"warning: folds {summary['missing_folds']} of {summary['split_folds']} not run",
              file=sys.stderr)
    for key, stats in summary["metrics"].items():
        line = f"  {key}: {stats['mean']:.3f} +- {stats['sd']:.3f} (sd over {stats['n']} folds)"
        leaf = key.rsplit(".", 1)[-1]
        if leaf.startswith(("mae", "rmse")) or leaf == "best_val_mae":  # errors in months
            line += f"  = {format_months(stats['mean'])} +- {format_months(stats['sd'])}"
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boneage", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="bone age of one or more films")
    predict.add_argument("paths", nargs="+", help="PNG/JPEG films or folders of them")
    predict.add_argument("--sex", required=True, help="M or F")
    predict.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                         help=f"export directory (default {DEFAULT_MODEL})")
    predict.add_argument("--format", default="keras", choices=["keras", "savedmodel", "tflite"],
                         help="which exported file to run (default keras)")
    predict.add_argument("--json", action="store_true", help="machine-readable output")
    predict.set_defaults(handler=_predict)

    crossval = commands.add_parser(
        "crossval", help="mean and spread of the metrics of k-fold experiments",
        description="Collect the experiments with train.fold >= 0 from `dvc exp show` and write "
                    "each metric's mean, sd, min, max and per-fold values.")
    crossval.add_argument("--out", type=Path, default=Path("metrics/crossval.json"),
                          help="summary file (default metrics/crossval.json)")
    crossval.add_argument("--exps", nargs="+", metavar="NAME",
                          help="the fold experiments to use (default: every one with "
                               "train.fold >= 0)")
    crossval.add_argument("--from-json", metavar="FILE",
                          help="read saved `dvc exp show --json` output instead of running dvc")
    crossval.set_defaults(handler=_crossval)
    return parser


def main(argv: list[str] | None = None) -> int:
    from boneage.runner import EXPECTED_ERRORS, setup_logging

    args = build_parser().parse_args(argv)
    setup_logging("WARNING")
    try:
        return args.handler(args)
    except (*EXPECTED_ERRORS, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
