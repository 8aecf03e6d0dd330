"""preprocess: decode, normalise and resize every film into one packed store."""

import argparse
from pathlib import Path

from boneage.kernel.config import load_section
from boneage.kernel.runner import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", type=Path, default=Path("data/raw"))
    parser.add_argument("--out", type=Path, default=Path("data/prepared"))
    args = parser.parse_args()

    from boneage.imaging.transforms import ImagingSettings
    from boneage.data.store import build_store

    params = load_section("preprocess", args.params)
    build_store(args.raw, args.out, ImagingSettings.from_params(params), workers=params.workers,
                on_error=params.on_error, film_check=params.film_check == "report")


if __name__ == "__main__":
    run(main)
