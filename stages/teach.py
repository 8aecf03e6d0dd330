"""teach: the trained members' mean reading of every training film, the targets a distilled
student (``train.distill_weight``) learns beside the labels (release pipeline)."""

import argparse
from pathlib import Path

from boneage.kernel.errors import ParamsError
from boneage.kernel.runner import add_verbose_flag, import_tensorflow, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--member", action="append", default=[], metavar="NAME=DIR",
                        help="a teacher's train stage output (repeat for each teacher)")
    parser.add_argument("--store", type=Path, default=Path("data/prepared"))
    parser.add_argument("--split", type=Path, default=Path("data/split"))
    parser.add_argument("--out", type=Path, default=Path("data/teacher"))
    add_verbose_flag(parser)
    args = parser.parse_args()
    teachers = dict(item.split("=", 1) for item in args.member if "=" in item)
    if not teachers or len(teachers) != len(args.member):
        raise ParamsError(f"give each teacher as --member NAME=DIR, got {args.member}")

    import_tensorflow(args.verbose)
    from boneage.learning.teachers import teacher_targets, write_teacher_targets

    write_teacher_targets(teacher_targets({name: Path(folder) for name, folder in
                                           teachers.items()}, args.store, args.split), args.out)


if __name__ == "__main__":
    run(main)
