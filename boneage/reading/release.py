"""The model that ships with boneage: found, verified, and chosen (ensemble or fast member).

``boneage predict`` and ``boneage serve`` read films with it when no ``--model`` is given.
It lives in the installed package (``boneage/release/``, written by the release pipeline,
release/dvc.yaml), or in the folder ``$BONEAGE_RELEASE`` names. Every file is checked
against the release's ``SHA256SUMS`` before a weight is loaded: a damaged or edited model
is refused, never read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from boneage.kernel.artifacts import RELEASE_JSON, RELEASE_SUMS
from boneage.kernel.digests import sha256
from boneage.kernel.errors import SetupError, UsageError
from boneage.learning.conformal import ConformalIntervals

RELEASE_ENV = "BONEAGE_RELEASE"  # a release folder to use instead of the packaged one
VARIANTS = ("ensemble", "fast")
HOW_TO_GET = ("build it from your RSNA copy with `dvc repro release/dvc.yaml` in a boneage "
              "checkout (docs/release.md), or pass --model DIR")


@dataclass(frozen=True)
class ReleaseChoice:
    """What :class:`boneage.reading.predictor.Ensemble` needs to read films as the release does."""

    model_dirs: list[Path]
    weights: list[float]
    intervals: ConformalIntervals
    tta: int
    identity: dict = field(default_factory=dict)  # name, version, variant, data, MAE


def release_dir() -> Path:
    """The release folder: ``$BONEAGE_RELEASE``, else the one inside the installed package."""
    configured = os.environ.get(RELEASE_ENV)
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / "release"


def verify_release(folder: Path) -> dict:
    """The release record, once every file listed in ``SHA256SUMS`` has its recorded sha256."""
    record_path, sums_path = folder / RELEASE_JSON, folder / RELEASE_SUMS
    if not record_path.is_file() or not sums_path.is_file():
        raise SetupError(f"no released model in {folder} ({RELEASE_JSON} or {RELEASE_SUMS} "
                         f"missing): {HOW_TO_GET}")
    listed = {}
    for number, line in enumerate(sums_path.read_text().splitlines(), start=1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise SetupError(f"{sums_path}: line {number} is not '<sha256>  <file>'")
        listed[name] = digest
    if RELEASE_JSON not in listed:
        raise SetupError(f"{sums_path}: does not list {RELEASE_JSON}")
    for name, expected in listed.items():
        path = folder / name
        if not path.is_file():
            raise SetupError(f"{path}: missing from the release; reinstall boneage or {HOW_TO_GET}")
        actual = sha256(path)
        if actual != expected:
            raise SetupError(f"{path}: sha256 {actual[:16]}... differs from the release's "
                             f"{expected[:16]}...: the file was changed or damaged; refusing "
                             f"to read films with it (reinstall boneage or rebuild the release)")
    record = json.loads(record_path.read_text())
    for name in record.get("files", {}):
        if name not in listed:
            raise SetupError(f"{sums_path}: does not list {name}, which {RELEASE_JSON} names")
    return record


def load_release(variant: str = "ensemble", folder: Path | None = None) -> ReleaseChoice:
    """The verified release, as the whole ensemble or as its fast member alone."""
    if variant not in VARIANTS:
        raise UsageError(f"release variant must be one of {VARIANTS}, got {variant!r}")
    folder = release_dir() if folder is None else Path(folder)
    record = verify_release(folder)
    by_name = {member["name"]: member for member in record["members"]}
    way = record[variant]
    if variant == "ensemble":
        names, weights = way["members"], way["weights"]
    else:
        names, weights = [way["member"]], [1.0]
    test = way["test"]
    identity = {
        "name": record["name"],
        "version": record["version"],
        "variant": variant if len(names) > 1 or variant == "fast" else "single model",
        "members": len(names),
        "data": record["data"]["name"],
        "data_fingerprint": record["data"].get("fingerprint"),
        "test_mae_months": round(test["mae_months"], 2),
        "n_test": test["n_test"],
        "interval_coverage_test": round(test["interval"]["coverage"], 3),
    }
    return ReleaseChoice([folder / by_name[name]["path"] for name in names], list(weights),
                         ConformalIntervals.from_dict(way["intervals"]),
                         int(record.get("tta", {}).get("passes", 1)), identity)


def check_model_choice(model_dirs: list | None, fast: bool) -> str:
    """What ``--model`` and ``--fast`` ask for, checked before TensorFlow loads (a missing or
    damaged release is one line at once); the release variant to read with."""
    variant = "fast" if fast else "ensemble"
    if model_dirs:
        if fast:
            raise UsageError("--fast picks the release's fast member; it does not apply to "
                             "--model exports")
        return variant
    load_release(variant)
    return variant

