"""release: the members' train outputs into the folder boneage ships (boneage/release)."""

import argparse
from pathlib import Path

from boneage.kernel.config import load_release, load_section
from boneage.kernel.errors import ParamsError
from boneage.kernel.runner import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--member", action="append", default=[], metavar="NAME=DIR",
                        help="a member's train stage output (repeat for each member)")
    parser.add_argument("--store", type=Path, default=Path("data/prepared"))
    parser.add_argument("--split", type=Path, default=Path("data/split"))
    parser.add_argument("--out", type=Path, default=Path("../boneage/release"))
    parser.add_argument("--pipeline", type=Path, default=Path("dvc.yaml"),
                        help="the release pipeline, whose stages the card's rebuild command "
                             "unfreezes")
    args = parser.parse_args()

    params, names = load_release(args.params)
    given = dict(item.split("=", 1) for item in args.member if "=" in item)
    if sorted(given) != sorted(names):
        raise ParamsError(f"release.members is {names}, but the stage was given "
                          f"{sorted(given)} (--member NAME=DIR); edit release/dvc.yaml")

    from boneage.learning.release import build_release, pipeline_stages

    build_release({name: Path(given[name]) for name in names}, args.store, args.split, params,
                  args.out, split_params=load_section("split", args.params).model_dump(),
                  repository=Path.cwd(),
                  external_sets={name: Path(folder) for name, folder in
                                 params.external_tests.items()},
                  pipeline_stages=pipeline_stages(args.pipeline))


if __name__ == "__main__":
    run(main)
