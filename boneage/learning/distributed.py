"""Check a multi-worker cluster before a long run: every worker trains the same short run.

Start it on every host with that host's ``TF_CONFIG`` (as for the train stage) and
``train.distribute: multi_worker`` in the params file. Each worker trains with the real
:func:`boneage.learning.training.train` and writes its final weights and loss history to
``--out/<task>-<index>.npz`` and ``.json``; :func:`compare` (or ``--compare``) then checks
that every worker ended with the same weights, which is what synchronous data-parallel
training promises. Like the train stage, only the chief writes the model (``--out/model``)
and the dvclive curves (``--out/live``).

    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
               "task": {"type": "worker", "index": 0}}' \\
      python -m boneage.learning.distributed --params params.yaml --out /shared/check
    python -m boneage.learning.distributed --compare /shared/check
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from boneage.kernel.errors import DataError


def task_name(strategy) -> str:
    """``worker-0``, ``chief-0`` ...; ``local-0`` outside a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "local-0"
    return f"{resolver.task_type}-{int(resolver.task_id)}"


def run_worker(params_path: Path, store_dir: Path, split_dir: Path, out_dir: Path) -> Path:
    """Run the train stage as this worker, then write ``<task>.npz`` (final weights) and
    ``<task>.json`` (history) to ``out_dir``.

    The stage writes its model to ``out_dir/model`` and curves to ``out_dir/live`` from the
    chief only, exactly as ``dvc repro`` would.
    """
    from boneage.kernel.config import load_section
    from boneage.learning.training import make_strategy

    params = load_section("train", params_path)
    strategy = make_strategy(params.distribute)  # first: collective ops are set up at start

    from boneage.learning.training import run_training

    result = run_training(store_dir, split_dir, params, out_dir / "model", out_dir / "live",
                          strategy=strategy)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = task_name(strategy)
    weights = result.model.get_weights()
    np.savez(out_dir / f"{name}.npz", *weights)
    info = {"task": name, "replicas": strategy.num_replicas_in_sync,
            "history": result.history, "n_weights": len(weights)}
    (out_dir / f"{name}.json").write_text(json.dumps(info, indent=2) + "\n")
    return out_dir / f"{name}.npz"


def compare(out_dir: Path) -> float:
    """Largest absolute difference between any worker's weights and the first one's."""
    files = sorted(Path(out_dir).glob("*.npz"))
    if len(files) < 2:
        raise DataError(f"{out_dir}: need the weights of at least 2 workers, found {len(files)}")
    first = np.load(files[0])
    worst = 0.0
    for other_path in files[1:]:
        other = np.load(other_path)
        if sorted(other.files) != sorted(first.files):
            raise DataError(f"{other_path}: different weights than {files[0]}")
        for key in first.files:
            if first[key].shape != other[key].shape:
                raise DataError(f"{other_path}: weight {key} has shape {other[key].shape}, "
                                f"{files[0]} has {first[key].shape}")
            worst = max(worst, float(np.max(np.abs(first[key] - other[key]), initial=0.0)))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boneage.learning.distributed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--store", type=Path, default=Path("data/prepared"))
    parser.add_argument("--split", type=Path, default=Path("data/split"))
    parser.add_argument("--out", type=Path, default=Path("distributed-check"))
    parser.add_argument("--compare", type=Path, metavar="DIR",
                        help="compare the weights the workers wrote to DIR and exit")
    args = parser.parse_args(argv)

    from boneage.kernel.runner import report_user_errors, setup_logging

    setup_logging()

    def check() -> int:
        if args.compare is not None:
            worst = compare(args.compare)
            same = worst <= 1e-6
            print(f"largest weight difference between workers: {worst:.3g} "
                  f"({'identical' if same else 'DIFFERENT'})")
            return 0 if same else 1
        print(f"wrote {run_worker(args.params, args.store, args.split, args.out)}")
        return 0

    return report_user_errors(check)


if __name__ == "__main__":
    sys.exit(main())
