"""Summarise a k-fold cross-validation run as queued DVC experiments.

With ``split.folds: k`` committed, ``dvc exp run --queue -S train.fold=0,1,...,k-1`` and
``dvc queue start`` train one model per fold (each validates on its held-out fold). This module
reads those runs from ``dvc exp show --json`` and writes the mean, the spread and the per-fold
value of every metric, so a setting is judged on k validation sets instead of one.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from boneage.kernel.errors import DataError


def exp_show(repo: str | Path = ".") -> list:
    """``dvc exp show --json`` of ``repo``: the workspace and the experiments based on HEAD."""
    try:
        result = subprocess.run(["dvc", "exp", "show", "--json"], cwd=repo,
                                capture_output=True, text=True, timeout=600)
    except FileNotFoundError as exc:
        raise DataError("the dvc command was not found; activate the project's environment") \
            from exc
    if result.returncode != 0:
        raise DataError(f"dvc exp show failed: {(result.stderr or result.stdout).strip()}")
    return json.loads(result.stdout)


def _runs(shown: list) -> list[dict]:
    """Every experiment in ``dvc exp show --json`` output as {name, rev, params, metrics}."""
    runs = []
    for baseline in shown:
        for group in baseline.get("experiments") or []:
            state = (group.get("executor") or {}).get("state", "success")
            if state not in ("success", None):  # queued, running or failed: no metrics yet
                continue
            for rev in group.get("revs") or []:
                data = rev.get("data") or {}
                if rev.get("error") or data.get("status") not in (None, "Success"):
                    continue
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
                metrics = {path: (content or {}).get("data") or {}
                           for path, content in (data.get("metrics") or {}).items()}
                runs.append({"name": rev.get("name") or rev.get("rev", "")[:7],
                             "rev": rev.get("rev"), "params": params, "metrics": metrics,
                             "timestamp": data.get("timestamp")})
    return runs


def _flatten(prefix: str, value, out: dict) -> None:
    """Leaves of a nested dict into ``out`` under dotted keys (``train.augment.zoom``)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _metric_values(metrics: dict) -> dict[str, float]:
    """{'evaluate.mae_months': 12.3, 'train.best_val_mae': ...}: file stem (or folder) + key."""
    values: dict[str, float] = {}
    for path, data in metrics.items():
        p = Path(path)
        stem = p.parent.name if p.name == "metrics.json" else p.stem
        leaves: dict = {}
        _flatten(stem, data, leaves)
        values.update({key: float(v) for key, v in leaves.items() if _is_number(v)})
    return values


def _differences(runs: list[dict]) -> list[str]:
    """Params (other than train.fold) whose value differs between the runs."""
    flat = []
    for run in runs:
        values: dict = {}
        _flatten("", run["params"], values)
        values.pop("train.fold", None)
        flat.append(values)
    keys = sorted(set().union(*flat))
    return [f"{key} ({', '.join(sorted({repr(v.get(key)) for v in flat}))})"
            for key in keys if len({repr(v.get(key)) for v in flat}) > 1]


def summarize(shown: list, names: list[str] | None = None) -> dict:
    """Mean, sample sd, min, max and per-fold values of every numeric metric of the fold runs.

    ``names`` picks the experiments; by default every experiment with ``train.fold >= 0``.
    Two runs of one fold, or runs that differ in anything but ``train.fold``, are refused:
    averaging them would mix settings.
    """
    runs = _runs(shown)
    if names:
        by_name = {run["name"]: run for run in runs}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise DataError(f"no experiment named {', '.join(missing)} in dvc exp show")
        runs = [by_name[name] for name in names]
    else:
        runs = [run for run in runs if int((run["params"].get("train") or {}).get("fold", -1)) >= 0]
    if len(runs) < 2:
        raise DataError(f"found {len(runs)} fold run(s); queue one experiment per fold with "
                        "`dvc exp run --queue -S train.fold=0,1,...` (split.folds >= 2) and "
                        "`dvc queue start`")
    folds: dict[int, dict] = {}
    for run in runs:
        fold = int((run["params"].get("train") or {}).get("fold", -1))
        if fold < 0:
            raise DataError(f"experiment {run['name']} has train.fold={fold}: not a fold run")
        if fold in folds:
            raise DataError(f"fold {fold} was run twice ({folds[fold]['name']}, {run['name']}); "
                            "name the runs to use with --exps or remove one with "
                            "`dvc exp remove`")
        folds[fold] = run
    differing = _differences(runs)
    if differing:
        raise DataError("the fold runs differ in more than train.fold: " + "; ".join(differing)
                        + "; name the runs of one setting with --exps")
    n_folds = int((runs[0]["params"].get("split") or {}).get("folds", 0))
    per_metric: dict[str, dict[str, float]] = {}
    for fold, run in sorted(folds.items()):
        for key, value in _metric_values(run["metrics"]).items():
            per_metric.setdefault(key, {})[str(fold)] = value
    metrics = {}
    for key, values in sorted(per_metric.items()):
        numbers = list(values.values())
        mean = sum(numbers) / len(numbers)
        sd = (math.sqrt(sum((x - mean) ** 2 for x in numbers) / (len(numbers) - 1))
              if len(numbers) > 1 else 0.0)
        metrics[key] = {"mean": mean, "sd": sd, "min": min(numbers), "max": max(numbers),
                        "n": len(numbers), "per_fold": values}
    return {
        "folds_run": sorted(folds),
        "split_folds": n_folds,
        "missing_folds": [k for k in range(n_folds) if k not in folds],
        "runs": {str(fold): run["name"] for fold, run in sorted(folds.items())},
        "metrics": metrics,
    }


def write_summary(summary: dict, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    return out


# The table `boneage crossval` prints: (metric key, column title, unit). Months are errors,
# R² a ratio, within-12 a share shown in %; counts and baselines stay in the JSON only.
TABLE_COLUMNS = (
    ("train.best_val_mae", "val MAE", "months"),
    ("evaluate.mae_months", "test MAE", "months"),
    ("evaluate.rmse_months", "test RMSE", "months"),
    ("evaluate.r2", "R²", "ratio"),
    ("evaluate.within_12", "within 12 mo", "share"),
)


def _cell(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "share":
        return f"{100 * value:.1f}%"
    if unit == "ratio":
        return f"{value:.3f}"
    return f"{value:.2f}"


def _spread(stats: dict | None, unit: str) -> str:
    if not stats:
        return "-"
    mean, sd = stats["mean"], stats["sd"]
    if unit == "share":
        return f"{100 * mean:.1f} ± {100 * sd:.1f}%"
    if unit == "ratio":
        return f"{mean:.3f} ± {sd:.3f}"
    return f"{mean:.2f} ± {sd:.2f}"


def table(summary: dict) -> str:
    """The headline metrics of each fold and their mean ± SD (sample SD over the folds), one
    row per fold: errors in months, R² as a ratio, within-12 as a share in %."""
    from boneage.kernel.ages import format_months

    columns = [(key, title, unit) for key, title, unit in TABLE_COLUMNS
               if key in summary["metrics"]]
    width = max(12, *(len(_spread(summary["metrics"][key], unit)) for key, _, unit in columns))
    names = summary["runs"]
    name_width = max(10, *(len(name) for name in names.values()))
    head = f"{'fold':<5}{'experiment':<{name_width + 2}}" + "".join(
        f"{title:>{width + 1}}" for _, title, _ in columns)
    lines = [head]
    for fold in (str(f) for f in summary["folds_run"]):
        cells = [_cell(summary["metrics"][key]["per_fold"].get(fold), unit)
                 for key, _, unit in columns]
        lines.append(f"{fold:<5}{names[fold]:<{name_width + 2}}"
                     + "".join(f"{cell:>{width + 1}}" for cell in cells))
    lines.append(f"{'mean ± SD':<{name_width + 7}}" + "".join(
        f"{_spread(summary['metrics'][key], unit):>{width + 1}}" for key, _, unit in columns))
    units = "errors in months; R² a ratio; within 12 mo: share of test films"
    lines.append(f"({len(summary['folds_run'])} folds; SD over folds; {units})")
    for key, title in (("train.best_val_mae", "held-out fold MAE"),
                       ("evaluate.mae_months", "test MAE")):
        if key in summary["metrics"]:
            stats = summary["metrics"][key]
            lines.append(f"{title}: {stats['mean']:.2f} ± {stats['sd']:.2f} months "
                         f"({format_months(stats['mean'])} ± {format_months(stats['sd'])})")
    return "\n".join(lines)
