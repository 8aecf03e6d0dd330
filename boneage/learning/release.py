"""The released model: the release pipeline's members assembled into the folder boneage ships.

Each member (a train stage of release/dvc.yaml) is exported as it ships (float32, its
calibration as the last layer) and read on the validation and test films of the store. The
validation films then choose everything that is fitted after training: whether test-time
augmentation pays, the members' weights, and the split-conformal intervals
(:mod:`boneage.learning.conformal`) of the ensemble and of the best single member, the fast
choice. The test films are read once, at the end, for the figures: they choose nothing.

The folder holds ``release.json`` (what ``boneage predict`` loads), a Markdown model card,
``SHA256SUMS`` over every file, and one export folder per member.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from boneage import __version__
from boneage.data.splits import read_ids
from boneage.data.store import open_store
from boneage.kernel.ages import format_months
from boneage.kernel.artifacts import (
    CARD_JSON,
    CARD_MD,
    EXPORT_KERAS,
    EXPORT_TFLITE,
    RELEASE_JSON,
    RELEASE_MEMBERS,
    RELEASE_SUMS,
    SPLIT_FILES,
    TRAINED_MODEL,
    TRAINING_SUMMARY,
    read_json,
    write_json,
)
from boneage.kernel.config import ReleaseParams
from boneage.kernel.digests import sha256
from boneage.kernel.errors import DataError
from boneage.kernel.provenance import git_commit
from boneage.learning.conformal import combine, coverage_report, fit_conformal
from boneage.learning.evaluation import evaluate_predictions, predict_store
from boneage.learning.calibration import Calibration
from boneage.learning.export import exportable_model, write_export
from boneage.learning.models import OUTPUT
from boneage.learning.runtimes import RunnerModel, load_runner
from boneage.learning.tta import TTA_TRANSFORMS

log = logging.getLogger(__name__)

RUNTIME_TOLERANCE_MONTHS = 0.05  # a shipped TFLite file reads every validation film this close to Keras
TTA_MIN_GAIN_MONTHS = 0.1  # test-time augmentation ships only if validation MAE drops this much
INTENDED_USE = ("research, and a second reading beside a radiologist's; not a medical device, "
                "not cleared or approved for clinical use")
LIMITATIONS = [
    "trained and tested on the RSNA 2017 training films downscaled to 100x100 px with their "
    "aspect ratio squashed to 1:1 (a third party's copy): full-resolution films are read "
    "through the same squash; films from other hospitals, scanners or processing may give "
    "larger errors",
    "infants (under 2 years) and near-adults (over 16 years) are rare in the data and read "
    "worst: their intervals are the widest",
    "the reference ages are the RSNA labels (Greulich & Pyle readings), themselves uncertain "
    "by several months",
    "left hands only, as in the data; no film of a growth disorder was set apart",
]


def fit_member_weights(predictions: np.ndarray, true: np.ndarray, kind: str) -> np.ndarray:
    """Non-negative weights summing to 1: the least-squares fit on validation films
    (``fitted``), or the plain mean (``equal``)."""
    members = predictions.shape[1]
    if kind == "equal" or members == 1:
        return np.full(members, 1.0 / members)
    from scipy.optimize import nnls

    weights, _ = nnls(predictions, true)
    if weights.sum() <= 0:
        return np.full(members, 1.0 / members)
    return weights / weights.sum()


def read_external_set(folder: Path) -> pd.DataFrame:
    """id, boneage, male and path of a Kaggle-layout folder (``<name>.csv`` beside ``<name>/``
    of ``<id>.png``): films read from their files, as ``boneage predict`` reads them."""
    tables = sorted(folder.glob("*.csv"))
    if len(tables) != 1:
        raise DataError(f"{folder}: expected one label CSV (Kaggle layout), found "
                        f"{[t.name for t in tables]}")
    labels = pd.read_csv(tables[0], dtype={"id": str})
    missing = {"id", "boneage", "male"} - set(labels.columns)
    if missing:
        raise DataError(f"{tables[0]}: no column {sorted(missing)}")
    labels["male"] = labels["male"].astype(str).str.lower().isin(["true", "1", "m", "male"])
    labels["path"] = [folder / tables[0].stem / f"{i}.png" for i in labels["id"]]
    return labels


def predict_external(models: list, weights: np.ndarray, passes: int, settings,
                     labels: pd.DataFrame) -> np.ndarray:
    """The ensemble's readings of films read from their files through the one imaging path
    (decode, prepare with the store's settings), with the release's TTA passes."""
    from boneage.imaging.decoding import read_film
    from boneage.imaging.transforms import prepare
    from boneage.learning.models import IMAGE_INPUT, SEX_INPUT
    from boneage.learning.tta import tta_films

    films = np.stack([prepare(read_film(Path(p).read_bytes(), str(p)), settings)
                      for p in labels["path"]])
    sex = labels["male"].to_numpy(np.float32)[:, None]
    readings = np.zeros((len(films), len(models)))
    for column, model in enumerate(models):
        outputs = [model.predict_on_batch({IMAGE_INPUT: tta_films(films, index).astype(
            np.float32)[..., None], SEX_INPUT: sex}) for index in range(passes)]
        readings[:, column] = np.mean([np.asarray(o, dtype=float).reshape(-1)
                                       for o in outputs], axis=0)
    return combine(readings, weights)[0]


def _figures(frame: pd.DataFrame, predicted: np.ndarray, spread, intervals, train_median: float,
             age_bands: list[float]) -> dict:
    """Test metrics of one way of reading (the ensemble, or the fast member), with coverage."""
    scored = frame[["id", "boneage", "male"]].copy()
    scored["predicted"] = predicted
    metrics = evaluate_predictions(scored, train_median, age_bands)
    metrics["interval"] = coverage_report(frame["boneage"].to_numpy(float), predicted, spread,
                                          intervals, age_bands)
    return metrics


def check_runtime(export_dir: Path, store, ids: list[str], reference: pd.DataFrame) -> dict:
    """The member's TFLite file read on the validation films, against its Keras reading
    (``reference``). A second runtime is a second way to be wrong (training/serving skew):
    a file that reads any film more than :data:`RUNTIME_TOLERANCE_MONTHS` apart is refused."""
    run = load_runner(export_dir / EXPORT_TFLITE, "tflite")
    frame = predict_store(RunnerModel(run), store, ids)
    difference = np.abs(frame["predicted"].to_numpy(float)
                        - reference["predicted"].to_numpy(float))
    worst = int(np.argmax(difference))
    if difference[worst] > RUNTIME_TOLERANCE_MONTHS:
        raise DataError(f"{export_dir / EXPORT_TFLITE}: reads validation film "
                        f"{frame['id'].iloc[worst]} {difference[worst]:.3f} months away from "
                        f"the Keras model (at most {RUNTIME_TOLERANCE_MONTHS} allowed); not "
                        f"shipping it")
    log.info("%s: %s reads the %d validation films within %.4f months of Keras",
             export_dir.name, run.runtime, len(frame), difference.max())
    return {"runtime": run.runtime, "films": len(frame),
            "max_abs_diff_months": float(difference.max()),
            "mean_abs_diff_months": float(difference.mean())}


def pipeline_stages(dvc_yaml: str | Path) -> list[str] | None:
    """The stage names of the release pipeline (its dvc.yaml), in order, teach stages
    included: what the card's rebuild command unfreezes. None when the file is absent."""
    import yaml

    path = Path(dvc_yaml)
    if not path.is_file():
        return None
    return list((yaml.safe_load(path.read_text()) or {}).get("stages", {})) or None


def build_release(member_dirs: dict[str, Path], store_dir: str | Path, split_dir: str | Path,
                  params: ReleaseParams, out_dir: str | Path, split_params: dict | None = None,
                  repository: Path | None = None,
                  external_sets: dict[str, Path] | None = None,
                  pipeline_stages: list[str] | None = None) -> dict:
    """The release stage: the members in ``member_dirs`` (name -> train stage output) into
    ``out_dir``, written whole or not at all. ``pipeline_stages`` (release/dvc.yaml's, in
    order) go into the card's rebuild command; without them, the data, member and release
    stages."""
    out_dir = Path(out_dir)
    store = open_store(store_dir)
    ids = {part: read_ids(Path(split_dir) / SPLIT_FILES[part]) for part in SPLIT_FILES}
    train_median = float(store.select(ids["train"])["boneage"].median())
    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    (staging / RELEASE_MEMBERS).mkdir(parents=True)

    passes = len(TTA_TRANSFORMS)
    val_frames, test_frames, members, models = {}, {}, [], []
    for name, member_dir in member_dirs.items():
        model, training = exportable_model(member_dir)
        models.append(model)
        log.info("member %s: reading %d validation and %d test films (%d TTA passes)", name,
                 len(ids["val"]), len(ids["test"]), passes)
        val_frames[name] = predict_store(model, store, ids["val"], tta=passes)
        test_frames[name] = predict_store(model, store, ids["test"], tta=passes)
        member_metrics = evaluate_predictions(test_frames[name], train_median,
                                              params.age_bands_months)
        write_export(model, training, store.info, member_metrics,
                     staging / RELEASE_MEMBERS / name, params.formats)
        checks = {}
        if "tflite" in params.formats:
            checks["tflite"] = check_runtime(staging / RELEASE_MEMBERS / name, store,
                                             ids["val"], val_frames[name])
        members.append({
            "name": name,
            "path": f"{RELEASE_MEMBERS}/{name}",
            "trained_at_commit": training.get("git_commit") or params.trained_at.get(name),
            "train_seconds": training.get("train_seconds"),
            "epochs_run": training.get("epochs_run"),
            "params": training.get("params"),
            "formats": list(params.formats),
            "runtime_checks": checks,
        })

    names = list(member_dirs)
    val_true = val_frames[names[0]]["boneage"].to_numpy(float)
    test_frame = test_frames[names[0]]

    def matrix(frames, column):
        return np.column_stack([frames[name][column].to_numpy(float) for name in names])

    single_pass = np.abs(combine(matrix(val_frames, "predicted"))[0] - val_true).mean()
    with_tta = np.abs(combine(matrix(val_frames, "predicted_tta"))[0] - val_true).mean()
    use_tta = single_pass - with_tta >= TTA_MIN_GAIN_MONTHS
    column = "predicted_tta" if use_tta else "predicted"
    log.info("validation MAE %.2f single pass, %.2f with %d TTA passes: %s", single_pass,
             with_tta, passes, "TTA ships" if use_tta else "no TTA")
    val, test = matrix(val_frames, column), matrix(test_frames, column)
    for index, member in enumerate(members):
        member["val_mae_months"] = float(np.abs(val[:, index] - val_true).mean())
        member["test_mae_months"] = float(np.abs(test[:, index] - test_frame["boneage"]).mean())

    weights = fit_member_weights(val, val_true, params.member_weights)
    for member, weight in zip(members, weights):
        member["weight"] = float(weight)
    ensemble_val, spread_val = combine(val, weights)
    ensemble_test, spread_test = combine(test, weights)
    method = params.interval if len(names) > 1 else "age_band"
    interval_args = dict(coverage=params.coverage, band_edges=params.interval_bands_months,
                         min_band_films=params.min_band_films, refer_factor=params.refer_factor)
    ensemble_intervals = fit_conformal(val_true, ensemble_val, spread_val, method=method,
                                       **interval_args)
    best = int(np.argmin([m["val_mae_months"] for m in members]))
    fast_intervals = fit_conformal(val_true, val[:, best], method="age_band", **interval_args)

    external = {}
    for set_name, folder in (external_sets or {}).items():
        if not Path(folder).is_dir():
            log.warning("external test set %s: %s not found; not read", set_name, folder)
            continue
        labels = read_external_set(Path(folder))
        tta_passes = passes if use_tta else 1
        predicted = predict_external(models, weights, tta_passes, store.settings, labels)
        mae = float(np.abs(predicted - labels["boneage"].to_numpy(float)).mean())
        fast = predict_external([models[best]], np.ones(1), tta_passes, store.settings, labels)
        external[set_name] = {
            "folder": str(folder), "n": len(labels), "mae_months": mae,
            "fast_mae_months": float(np.abs(fast - labels["boneage"].to_numpy(float)).mean()),
            "ratio_to_test_mae": mae / float(np.abs(ensemble_test - test_frame["boneage"]).mean()),
        }
        log.info("external test set %s: %d films read from their files, MAE %.2f months",
                 set_name, len(labels), mae)

    ensemble_scale = spread_test if method == "spread_age_band" else None
    record = {
        "name": params.name,
        "version": params.version,
        "created_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "boneage_version": __version__,
        "assembled_at_commit": git_commit(repository, ignore=[out_dir]),
        "task": "bone age (months) from a left-hand radiograph and sex, with a "
                f"{params.coverage:.0%} prediction interval",
        "intended_use": INTENDED_USE,
        "data": {
            "name": params.data_name,
            "citation": params.data_citation,
            "terms": params.data_terms,
            "source": store.info.get("source"),
            "fingerprint": store.info.get("source_fingerprint"),
            "n_films": store.info.get("n_films"),
            "n_train": len(ids["train"]), "n_val": len(ids["val"]), "n_test": len(ids["test"]),
            "split": split_params,
        },
        "imaging": store.info["imaging"],
        "tta": {"passes": passes if use_tta else 1, "val_mae_single_pass": float(single_pass),
                "val_mae_tta": float(with_tta)},
        "members": members,
        "ensemble": {
            "members": names,
            "weights": [float(w) for w in weights],
            "intervals": ensemble_intervals.to_dict(),
            "val_mae_months": float(np.abs(ensemble_val - val_true).mean()),
            "test": _figures(test_frame, ensemble_test, ensemble_scale, ensemble_intervals,
                             train_median, params.age_bands_months),
        },
        "fast": {
            "member": names[best],
            "intervals": fast_intervals.to_dict(),
            "val_mae_months": members[best]["val_mae_months"],
            "test": _figures(test_frame, test[:, best], None, fast_intervals, train_median,
                             params.age_bands_months),
        },
        "external": external,
        "limitations": LIMITATIONS,
        "rebuild": "dvc unfreeze " + " ".join(
            f"release/dvc.yaml:{stage}" for stage in pipeline_stages or
            ("fetch", "preprocess", "split", *[f"member_{n}" for n in names], "release"))
            + " && dvc repro release/dvc.yaml (docs/release.md)",
    }
    (staging / CARD_MD).write_text(release_markdown(record))
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    record["files"] = {p.relative_to(staging).as_posix(): sha256(p) for p in files}
    write_json(staging / RELEASE_JSON, record)
    sums = sorted(p for p in staging.rglob("*") if p.is_file())
    (staging / RELEASE_SUMS).write_text("".join(
        f"{sha256(p)}  {p.relative_to(staging).as_posix()}\n" for p in sums))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    log.info("release %s %s: ensemble of %d, test MAE %.2f months, %d%% interval coverage "
             "%.1f%%; fast member %s %.2f months", params.name, params.version, len(names),
             record["ensemble"]["test"]["mae_months"], round(100 * params.coverage),
             100 * record["ensemble"]["test"]["interval"]["coverage"], names[best],
             record["fast"]["test"]["mae_months"])
    return record


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _way_lines(title: str, way: dict) -> list[str]:
    test = way["test"]
    interval = test["interval"]
    lines = [f"### {title}", "",
             f"- MAE {test['mae_months']:.2f} months ({format_months(test['mae_months'])}), "
             f"RMSE {test['rmse_months']:.2f}, R² {test['r2']:.3f}, within 12 months "
             f"{100 * test['within_12_months']:.1f} %; predicting the training median: "
             f"{test['baseline_median']['mae_months']:.2f} months",
             "- MAE by sex: " + ", ".join(f"{k} {v:.2f}" for k, v in test["mae_by_sex"].items()),
             f"- {100 * interval['nominal']:.0f} % interval: coverage "
             f"{100 * interval['coverage']:.1f} %, median width "
             f"{interval['median_width_months']:.1f} months; "
             f"{100 * interval['referred_share']:.1f} % of readings flagged for a radiologist",
             "", "| age band (months) | films | MAE (months) | coverage | median width |",
             "| --- | --- | --- | --- | --- |"]
    for band, cell in test["mae_by_age_band"].items():
        cover = interval["by_age_band"][band]
        lines.append(f"| {band} | {cell['n']} | {_number(cell['mae_months'], '.2f')} | "
                     f"{_number(cover['coverage'], '.1%')} | "
                     f"{_number(cover['median_width_months'], '.1f')} |")
    return [*lines, ""]


def _external_lines(external: dict) -> list[str]:
    if not external:
        return []
    lines = ["### Films read from their files", ""]
    for name, figures in external.items():
        lines.append(f"- {name}: {figures['n']} films, MAE {figures['mae_months']:.2f} months "
                     f"(fast member {figures['fast_mae_months']:.2f}), "
                     f"{figures['ratio_to_test_mae']:.2f}x the test MAE")
    return [*lines, ""]


def release_markdown(record: dict) -> str:
    """The release's model card for people: data and terms, metrics, coverage, limits."""
    data = record["data"]
    lines = [
        f"# Model card: {record['name']} {record['version']}",
        "",
        f"{record['task']}. Assembled {record['created_utc']} with boneage "
        f"{record['boneage_version']} at commit {record['assembled_at_commit']}.",
        "",
        "## Intended use",
        f"{record['intended_use'][0].upper()}{record['intended_use'][1:]}.",
        "",
        "## Data",
        f"- {data['name']}: {data['citation']}.",
        f"- Terms: {data['terms']}.",
        f"- Source read: `{data['source']}`; fingerprint `{data['fingerprint']}`; "
        f"{data['n_films']} films prepared.",
        f"- Split (stratified by age band and sex, seeded): {data['n_train']} training, "
        f"{data['n_val']} validation (calibration, member weights, intervals, TTA choice), "
        f"{data['n_test']} test films (read once, for the figures below). "
        f"Split params: `{json.dumps(data['split'], sort_keys=True)}`.",
        "",
        "## Preprocessing",
        "Every film goes through `boneage.imaging.transforms.prepare` with: " + ", ".join(
            f"`{k}` {v}" for k, v in record["imaging"].items()) + ".",
        f"Test-time augmentation: {record['tta']['passes']} pass(es) (validation MAE "
        f"{record['tta']['val_mae_single_pass']:.2f} single pass, "
        f"{record['tta']['val_mae_tta']:.2f} with 8).",
        "",
        "## Test figures",
        "",
        *_way_lines(f"Ensemble of {len(record['ensemble']['members'])} (default)",
                    record["ensemble"]),
        *_way_lines(f"Fast: member {record['fast']['member']} alone (`--fast`)", record["fast"]),
        *_external_lines(record.get("external") or {}),
        "## Members",
        "",
        "| member | weight | trained at commit | train time | epochs | val MAE | test MAE |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *[f"| {m['name']} | {m['weight']:.3f} | {m['trained_at_commit']} | "
          f"{(m['train_seconds'] or 0) / 60:.0f} min | {m['epochs_run']} | "
          f"{m['val_mae_months']:.2f} | {m['test_mae_months']:.2f} |" for m in record["members"]],
        "",
        *_runtime_lines(record["members"]),
        "## Intervals",
        "Split-conformal on the validation films, one quantile per band of predicted age "
        "(Mondrian); a reading whose interval is wider than "
        f"{record['ensemble']['intervals']['refer_width_months']:.1f} months (ensemble) says "
        "that a radiologist should read the film.",
        "",
        "## Limitations",
        *[f"- {item}" for item in record["limitations"]],
        "",
        "## Rebuild",
        f"{record['rebuild']}.",
        "",
        "## Files",
        "Every file's sha256 is in `SHA256SUMS` (and in `release.json`); boneage refuses a "
        "release whose files differ.",
        "",
    ]
    return "\n".join(lines)


def _runtime_lines(members: list[dict]) -> list[str]:
    """How each member's files are read, and how closely the TFLite file agrees with Keras."""
    checked = [m for m in members if (m.get("runtime_checks") or {}).get("tflite")]
    if not checked:
        return []
    lines = ["## Runtimes",
             "Each member ships its Keras file (Grad-CAM, `--format keras`) and a float32 TFLite "
             "file, which `boneage predict`, the DICOM node and the DICOMweb worker read "
             "through LiteRT without importing TensorFlow (`--format auto`). Before shipping, "
             "each TFLite file read every validation film; it is refused if any reading is "
             f"more than {RUNTIME_TOLERANCE_MONTHS} months from the Keras model's:", ""]
    for member in checked:
        check = member["runtime_checks"]["tflite"]
        lines.append(f"- {member['name']}: {check['runtime']}, {check['films']} films, largest "
                     f"difference {check['max_abs_diff_months']:.4f} months (mean "
                     f"{check['mean_abs_diff_months']:.5f})")
    return [*lines, ""]


def uncalibrated_model(model: keras.Model) -> keras.Model:
    """What :func:`boneage.learning.export.calibrated_model` wrapped: the exported model
    without its calibration layer (``model`` itself where it has none)."""
    if not isinstance(model.get_layer(OUTPUT), Calibration):
        return model
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(inner) != 1:
        raise ValueError(f"model {model.name!r}: a calibration layer over {len(inner)} models; "
                         "expected the one calibrated_model wraps")
    return inner[0]


def restore_member(release_folder: str | Path, name: str, out_dir: str | Path) -> Path:
    """Member ``name``'s train stage output rebuilt from a shipped release.

    A member's train output lives only in the DVC cache of the machine that trained it; on any
    other machine the release stage could not be rerun (to add a member, or refit the
    intervals) without retraining every member. The shipped export holds the trained weights:
    this takes its calibration layer off again, and writes the training summary the train
    stage wrote (params, calibration, the commit it was trained at). The optimizer state and
    the per-epoch history are not in a release, so a restored member cannot resume training.
    """
    release_folder, out_dir = Path(release_folder), Path(out_dir)
    record = read_json(release_folder / RELEASE_JSON, "release")
    member = next((m for m in record["members"] if m["name"] == name), None)
    if member is None:
        raise DataError(f"{release_folder / RELEASE_JSON}: no member {name!r} (members: "
                        f"{', '.join(m['name'] for m in record['members'])})")
    member_dir = release_folder / member["path"]
    for file in (CARD_JSON, EXPORT_KERAS):
        relative = f"{member['path']}/{file}"
        if sha256(member_dir / file) != record["files"].get(relative):
            raise DataError(f"{member_dir / file}: sha256 differs from {RELEASE_JSON}'s; "
                            "restore from an unchanged release")
    card = read_json(member_dir / CARD_JSON, "release")
    model = uncalibrated_model(keras.saving.load_model(member_dir / EXPORT_KERAS))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / TRAINED_MODEL)
    training = card["training"]
    write_json(out_dir / TRAINING_SUMMARY, {
        "best_epoch": training.get("best_epoch"),
        "epochs_run": training.get("epochs_run"),
        "train_seconds": training.get("train_seconds"),
        "n_train": card["data"].get("n_train"),
        "n_val": card["data"].get("n_val"),
        "cpu_count": training.get("cpu_count"),
        "calibration": card.get("calibration") or {"kind": "none"},
        "imaging": card["imaging"],
        "params": training.get("params"),
        "git_commit": member.get("trained_at_commit"),
        "restored_from": f"{record['name']} {record['version']} {member['path']}",
    })
    log.info("member %s restored from %s %s into %s (weights as trained; no optimizer state)",
             name, record["name"], record["version"], out_dir)
    return out_dir
