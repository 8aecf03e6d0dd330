"""``boneage`` command line: predict bone age for films, serve a page and API that do, and
summarise cross-validation experiments."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


DEFAULT_MODEL_HELP = ("export directory; without one, the model that ships with boneage "
                      "(boneage/release: an RSNA-trained ensemble with 90 %% intervals); give "
                      "several for an ensemble")


def _predict(args: argparse.Namespace) -> int:
    from boneage.reading.inputs import (
        chronological_ages,
        expand_paths,
        heatmap_folder,
        parse_height_cm,
        parse_sex,
        require_sex,
    )

    # Everything the user typed is checked before TensorFlow is imported (seconds) and the
    # models load: a bad flag, a missing film, an empty folder, a PNG without --sex or one
    # age for several films fails at once.
    if args.sex is not None:
        parse_sex(args.sex)
    height = parse_height_cm(args.height_cm) if args.height_cm is not None else None
    paths = expand_paths(args.paths)
    chronological = chronological_ages(args.chronological_age, paths)
    require_sex(paths, args.sex)
    explain = heatmap_folder(args.explain) if args.explain is not None else None
    choice = None
    if args.model:
        _check_release(args)
    else:  # verified once, before TensorFlow: a missing or damaged release is one line at once
        from boneage.reading.release import load_release

        choice = load_release(_variant(args))
    # A folder's films are read up to the models' input in a background thread while
    # TensorFlow imports and the models load (seconds the films used to wait for).
    films, settings = None, None
    if explain is None and len(paths) > 1:
        films, settings = _prefetch(args.model or choice.model_dirs, paths, args.sex, chronological,
                          args.force, height)
    try:
        from boneage.learning.runtimes import needs_tensorflow, resolve_format

        model_format = resolve_format(args.model or choice.model_dirs, args.format)
        if needs_tensorflow(model_format) or explain is not None:  # Grad-CAM needs Keras
            _import_tensorflow(args)
        from boneage.reading.predictor import Ensemble

        ensemble = (Ensemble(args.model, model_format=model_format) if args.model
                    else Ensemble.from_choice(choice, model_format))
        if films is not None and settings != ensemble.settings:
            films.close()  # never expected: the cards were read twice and differ
            films = None
        readings = ensemble.predict_paths(paths, sex=args.sex, chronological=chronological,
                                          batch_size=args.batch_size,
                                          progress=len(paths) > 20,
                                          explain_dir=explain, force=args.force,
                                          height_cm=height, films=films)
    finally:
        if films is not None:
            films.close()
    from boneage.reading.standards import RULE

    rows = [r.to_dict() for r in readings]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.csv:
        _write_csv(rows)
    else:
        for reading in readings:
            print(reading.text())
        if any(r.assessment is not None for r in readings):
            print(f"call: {RULE}")
        if any(r.adult_height is not None for r in readings):
            from boneage.reading.adult_height import FOOTER

            print(FOOTER)
    failed = sum("error" in row for row in rows)
    if failed:
        print(f"{failed} of {len(rows)} films could not be read", file=sys.stderr)
    return 1 if failed else 0  # a script must see that a film of its folder was not read


def _prefetch(model_dirs, paths, sex, chronological, force, height):
    """The films prepared ahead in a background thread (:class:`Prefetch`) and the imaging
    settings they are prepared for; (None, None) when an export's card cannot be read here
    (the models' own loading then says what is wrong)."""
    from boneage.reading.preparation import FilmPreparation, Prefetch, card_settings

    try:
        preparation = FilmPreparation(card_settings(model_dirs))
    except (OSError, KeyError, TypeError, ValueError):
        return None, None
    return (Prefetch(preparation.prepare_paths(paths, sex, chronological, force, height)),
            preparation.settings)


CSV_COLUMNS = ["path", "sex", "sex_source", "boneage_months", "boneage_text", "spread_months",
               "models", "interval_low_months", "interval_high_months", "interval_coverage",
               "refer_to_radiologist", "model_text", "chronological_months",
               "chronological_text", "age_source", "difference_months", "sd_months", "z_score",
               "call", "rule", "height_cm", "height_source", "adult_height_cm",
               "percent_of_mature_height", "maturity", "adult_height_table",
               "adult_height_refused", "heatmap", "warning", "error"]


def _write_csv(rows: list[dict]) -> None:
    import csv

    writer = csv.DictWriter(sys.stdout, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        row = dict(row)
        if "models" in row:
            row["models"] = " ".join(str(m) for m in row["models"])
        if "interval_months" in row:
            row["interval_low_months"], row["interval_high_months"] = row["interval_months"]
        writer.writerow({key: csv_cell(value) for key, value in row.items()})


def csv_cell(value):
    """A CSV cell a spreadsheet shows as text: a string starting with =, +, -, @ (or a tab or
    carriage return) would be run as a formula (a file named ``=HYPERLINK(...).png``), so it
    gets a leading apostrophe (OWASP's advice). Numbers are left as numbers."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _check_release(args: argparse.Namespace) -> None:
    """--model / --fast checked, and without --model the release verified, before TensorFlow."""
    from boneage.reading.release import check_model_choice

    check_model_choice(args.model, args.fast)


def _variant(args: argparse.Namespace) -> str:
    return "fast" if args.fast else "ensemble"


def _serve(args: argparse.Namespace) -> int:
    from boneage.interfaces.serve import check_origin, run_server

    for origin in args.allow_origin or ():
        check_origin(origin)  # before TensorFlow loads
    _check_release(args)
    _import_tensorflow(args)

    run_server(args.model, host=args.host, port=args.port, model_format=args.format,
               max_upload_mb=args.max_upload_mb, release_variant=_variant(args),
               max_decoding=args.max_decoding, queue_timeout=args.queue_timeout,
               body_timeout=args.body_timeout, allow_origins=args.allow_origin or ())
    return 0


def _crossval(args: argparse.Namespace) -> int:
    from boneage.learning.crossval import exp_show, summarize, table, write_summary

    shown = _saved_exp_show(Path(args.from_json)) if args.from_json else exp_show()
    summary = summarize(shown, args.exps)
    out = write_summary(summary, args.out)
    print(f"{len(summary['folds_run'])} folds ({', '.join(summary['runs'].values())}) -> {out}")
    if summary["missing_folds"]:
        print(f"warning: folds {summary['missing_folds']} of {summary['split_folds']} not run",
              file=sys.stderr)
    print(table(summary))
    return 0


def _saved_exp_show(path: Path) -> list:
    from boneage.kernel.errors import UsageError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--from-json {path}: cannot read it ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--from-json {path}: not `dvc exp show --json` output ({exc})") from None


MAX_UPLOAD_MB = 1024.0  # uploads are held in memory: a ceiling for the flag


def upload_megabytes(text: str) -> float:
    """``--max-upload-mb``: a finite number of MB above 0 (not -5, inf or nan)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or not 0 < value <= MAX_UPLOAD_MB:
        raise argparse.ArgumentTypeError(f"{text!r} MB: give a size above 0 and at most "
                                         f"{MAX_UPLOAD_MB:g} MB")
    return value


def _positive(kind, what: str):
    """An argparse type: a finite ``kind`` above 0 (``what`` names it in the error)."""
    import math

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: give {what} above 0")
        return value

    return parse


def _verbose_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument("-v", "--verbose", action="store_true",
                         help="log what is happening, TensorFlow's start-up lines included "
                              "(or set BONEAGE_VERBOSE=1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="boneage", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser("predict", help="bone age of one or more films")
    predict.add_argument("paths", nargs="+", help="films (PNG, JPEG, TIFF, BMP, WebP, PNM or "
                                                  "DICOM) or folders of them")
    predict.add_argument("--sex", help="M or F; when absent, read from each DICOM's PatientSex")
    predict.add_argument("--chronological-age", metavar="AGE", action="append",
                         help="the child's age, as months (122) or years and months (10y2m), "
                              "from 1 month to 20 years; adds the difference and a "
                              "delayed/normal/advanced call. With several films, one per "
                              "film: FILM=AGE (path or file name), repeated")
    predict.add_argument("--height-cm", metavar="CM",
                         help="the child's current height in cm (else the DICOM PatientSize); "
                              "with the chronological age, adds the adult height predicted by "
                              "Bayley-Pinneau")
    predict.add_argument("--model", type=Path, action="append", metavar="DIR",
                         help=DEFAULT_MODEL_HELP)
    predict.add_argument("--fast", action="store_true",
                         help="read with the release's best single member instead of the "
                              "whole ensemble")
    predict.add_argument("--format", default="auto",
                         choices=["auto", "keras", "savedmodel", "tflite"],
                         help="which exported file to run (default auto: TFLite through "
                              "LiteRT, without TensorFlow's start-up, where every model has "
                              "one; else keras)")
    predict.add_argument("--explain", type=Path, metavar="OUTDIR",
                         help="write a Grad-CAM heatmap PNG per film here")
    predict.add_argument("--force", action="store_true",
                         help="read films the film check refuses as not a hand radiograph, "
                              "and give the clinical call of a model trained on synthetic "
                              "films (the report says so)")
    predict.add_argument("--batch-size", type=int, default=32, help=argparse.SUPPRESS)
    output = predict.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="machine-readable output (JSON)")
    output.add_argument("--csv", action="store_true", help="machine-readable output (CSV)")
    _verbose_flag(predict)
    predict.set_defaults(handler=_predict)

    serve = commands.add_parser("serve", help="web page and JSON API for predictions")
    serve.add_argument("--model", type=Path, action="append", metavar="DIR",
                       help=DEFAULT_MODEL_HELP)
    serve.add_argument("--fast", action="store_true",
                       help="serve the release's best single member instead of the ensemble")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--format", default="auto",
                       choices=["auto", "keras", "savedmodel", "tflite"],
                       help="which exported file answers predictions (default auto: TFLite "
                            "through LiteRT where every model has one, else keras; Grad-CAM "
                            "reads the keras files)")
    serve.add_argument("--max-upload-mb", type=upload_megabytes, default=20.0, metavar="MB",
                       help="largest upload accepted, with or without a Content-Length "
                            f"(default 20 MB, at most {MAX_UPLOAD_MB:g})")
    serve.add_argument("--max-decoding", type=_positive(int, "a whole number of films"),
                       default=2, metavar="N",
                       help="films decoded and read at once (default 2); the others wait "
                            "for a slot")
    serve.add_argument("--queue-timeout", type=_positive(float, "a number of seconds"),
                       default=15.0, metavar="S",
                       help="how long an upload waits for a slot before a 503 with "
                            "Retry-After (default 15 s)")
    serve.add_argument("--body-timeout", type=_positive(float, "a number of seconds"),
                       default=30.0, metavar="S",
                       help="the whole upload must arrive within this, else 408 (default 30 s)")
    serve.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                       help="let pages of this site (scheme://host[:port]) call the API, with "
                            "CORS headers; repeat for several. Without it, requests made by "
                            "pages of other origins are refused with 403")
    _verbose_flag(serve)
    serve.set_defaults(handler=_serve)

    from boneage.interfaces.hospital_cli import add_commands  # dicom-node, dicomweb

    add_commands(commands, _verbose_flag)

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
    _verbose_flag(crossval)
    crossval.set_defaults(handler=_crossval)
    return parser


def main(argv: list[str] | None = None) -> int:
    from boneage.kernel.runner import report_user_errors, setup_logging

    args = build_parser().parse_args(argv)
    from boneage.kernel.runner import verbose_requested

    setup_logging("INFO" if args.verbose or verbose_requested() else "WARNING")
    return report_user_errors(lambda: args.handler(args))


def _import_tensorflow(args: argparse.Namespace) -> None:
    """TensorFlow, imported once the arguments are checked: its start-up lines hidden unless
    ``--verbose`` (they are the library's, not the reading's)."""
    from boneage.kernel.runner import import_tensorflow

    import_tensorflow(args.verbose)


if __name__ == "__main__":
    sys.exit(main())
