"""fetch: bring the data set named by ``fetch.source`` into data/raw in one canonical form."""

import argparse
from pathlib import Path

from boneage.kernel.config import load_section
from boneage.kernel.runner import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, default=Path("data/raw"))
    parser.add_argument("--downloads", type=Path, default=Path("data/downloads"))
    args = parser.parse_args()

    from boneage.data.sources import fetch

    fetch(load_section("fetch", args.params), args.out, download_dir=args.downloads)


if __name__ == "__main__":
    run(main)
