"""export: .keras, SavedModel, TFLite and a model card in models/boneage."""

import argparse
from pathlib import Path

from boneage.kernel.config import load_section
from boneage.kernel.runner import add_verbose_flag, import_tensorflow, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", type=Path, default=Path("models/trained"))
    parser.add_argument("--store-info", type=Path, default=Path("data/prepared/store.json"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/evaluate.json"))
    parser.add_argument("--out", type=Path, default=Path("models/boneage"))
    add_verbose_flag(parser)
    args = parser.parse_args()

    import_tensorflow(args.verbose)  # its start-up lines only when asked for
    from boneage.learning.export import run_export

    params = load_section("export", args.params)
    run_export(args.model, args.store_info, args.metrics, args.out, list(params.formats))


if __name__ == "__main__":
    run(main)
