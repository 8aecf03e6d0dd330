"""train: fit the model chosen by the ``train`` params (or, with ``--member``, those of one
release ensemble member: ``train`` with ``members.<name>`` over it); curves go to dvclive."""

import argparse
from pathlib import Path

from boneage.kernel.config import load_member, load_section
from boneage.kernel.runner import add_verbose_flag, import_tensorflow, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--store", type=Path, default=Path("data/prepared"))
    parser.add_argument("--split", type=Path, default=Path("data/split"))
    parser.add_argument("--out", type=Path, default=Path("models/trained"))
    parser.add_argument("--live", type=Path, default=Path("metrics/train"))
    parser.add_argument("--member", help="train the ensemble member members.<MEMBER>")
    parser.add_argument("--teacher", type=Path,
                        help="the teach stage's output: targets for train.distill_weight")
    add_verbose_flag(parser)
    args = parser.parse_args()

    import_tensorflow(args.verbose)  # its start-up lines only when asked for
    from boneage.learning.training import run_training

    params = (load_member(args.member, args.params) if args.member
              else load_section("train", args.params))
    teacher = None
    if args.teacher is not None:
        from boneage.learning.distillation import read_teacher_targets

        teacher = read_teacher_targets(args.teacher)
    run_training(args.store, args.split, params, args.out, args.live, teacher=teacher)


if __name__ == "__main__":
    run(main)
