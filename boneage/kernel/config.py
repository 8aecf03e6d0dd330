"""Typed view of ``params.yaml``: one loader, one model per stage section.

The defaults here are ``params.yaml``'s values (tests/test_config.py fails when the two
disagree), so code that builds a section without the file trains what the pipeline trains.

Every stage reads only its own section, so DVC can rerun exactly the stages whose
knobs changed. Unknown keys and bad values are rejected with the dotted key name,
because a typo in ``params.yaml`` that is silently ignored trains the wrong model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from boneage.kernel.errors import ParamsError  # noqa: F401  (raised here; importable from here)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticParams(_Section):
    """Synthetic hand radiographs made by :mod:`boneage.data.phantom`."""

    count: int = Field(1600, ge=1, description="number of films to generate")
    height: int = Field(200, ge=32, le=4096, description="film height in px (width is 4/5 of it)")
    seed: int = 0
    max_age_months: float = Field(228.0, gt=0, le=240)


class FetchParams(_Section):
    source: str = Field(
        "synthetic",
        description="'synthetic', a local folder, a .zip/.tar.gz archive, or an http(s) URL of one",
    )
    synthetic: SyntheticParams = SyntheticParams()
    on_error: Literal["skip", "fail"] = Field(
        "fail", description="a bad label row: 'fail' stops the stage, 'skip' reports and drops it"
    )
    sha256: str | None = Field(
        None, description="for a URL source: the archive's SHA-256 (64 hex digits) or the URL "
        "of a .sha256 file beside it; the download must match it"
    )


class PreprocessParams(_Section):
    size: int = Field(96, ge=16, le=2048, description="side of the square model input, px")
    resize: Literal["squash", "pad"] = "squash"
    contrast: Literal["none", "percentile", "clahe"] = "percentile"
    percentiles: tuple[float, float] = (1.0, 99.0)
    clahe_clip: float = Field(2.0, gt=0)
    clahe_tiles: int = Field(8, ge=1, le=64)
    crop: Literal["none", "hand"] = "hand"
    workers: int = Field(0, ge=0, description="0 means every core")
    on_error: Literal["skip", "fail"] = "skip"
    film_check: Literal["report", "off"] = Field(
        "report", description="report (in store.json) films the film check finds not to be "
        "hand radiographs or inverted; they are kept either way"
    )

    @field_validator("percentiles")
    @classmethod
    def _check_percentiles(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low < high <= 100:
            raise ValueError(f"must satisfy 0 <= low < high <= 100, got [{low}, {high}]")
        return value


class SplitParams(_Section):
    seed: int = 42
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)
    age_band_months: float = Field(24.0, gt=0, description="width of the age strata")
    folds: int = Field(0, ge=0, description="0 = no k-fold; k >= 2 writes folds.csv")

    @model_validator(mode="after")
    def _check_fractions(self) -> "SplitParams":
        if self.val + self.test >= 1:
            raise ValueError(f"val + test must be < 1, got {self.val} + {self.test}")
        if self.folds == 1:
            raise ValueError("folds must be 0 (off) or at least 2")
        return self


class AugmentParams(_Section):
    rotation_degrees: float = Field(10.0, ge=0, le=180)
    shift: float = Field(0.05, ge=0, lt=1, description="fraction of the side")
    zoom: float = Field(0.1, ge=0, lt=1, description="+- fraction")
    brightness: float = Field(0.1, ge=0, le=1)
    contrast: float = Field(0.1, ge=0, le=1)
    horizontal_flip: bool = False
    mixup_alpha: float = Field(0.0, ge=0, description="0 disables MixUp")


class TrainParams(_Section):
    seed: int = 42
    architecture: Literal[
        "compact", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
        "efficientnetb0", "mobilenetv3small", "mobilenetv3large", "resnet50"
    ] = "compact"
    frozen_stages: int = Field(
        0, ge=-1, le=7, description="EfficientNet-Lite: freeze the stem and the first k of its "
        "7 stages (0 = train all, -1 = the whole backbone); frozen BatchNormalization keeps its "
        "ImageNet statistics"
    )
    backbone_lr_scale: float = Field(
        1.0, gt=0, le=1, description="the pretrained backbone's learning rate as a fraction of "
        "train.lr (the head's); 1 = one rate for all (recipe.PartwiseAdamW)"
    )
    width: int = Field(16, ge=4, le=512, description="filters of the compact CNN's first block")
    head: Literal["gap", "flatten"] = Field(
        "gap", description="compact CNN: average the last feature map (gap) or keep where "
        "each feature is (flatten)"
    )
    output: Literal["regression", "age_bins"] = Field(
        "regression", description="regression: one linear unit; age_bins: softmax over age bins "
        "and its expected age (models.AgeBinExpectation)"
    )
    age_bin_months: float = Field(6.0, gt=0, description="width of an age bin (output: age_bins)")
    age_bin_variance_weight: float = Field(
        0.0, ge=0, description="output: age_bins: weight of the predicted distribution's "
        "variance (months squared) added to the loss (mean-variance loss; 0 = off)"
    )
    weights: str = Field("none", description="'none', 'imagenet' or a path to a weights file")
    use_sex: bool = True
    standardise_target: bool = True
    age_weighting: Literal["none", "inverse_density", "sqrt_inverse_density"] = Field(
        "none", description="per-film loss weights against the pull to the middle ages: 1 or "
        "1/sqrt of the training films in the film's 12-month age bin, mean 1, capped at 10 "
        "(recipe.age_weights)"
    )
    calibration: Literal["none", "linear", "linear_by_sex"] = Field(
        "linear", description="after training, fit months = slope * predicted + intercept on "
        "the validation films (pooled, or per sex) against regression to the mean; evaluate "
        "reports and export applies it (boneage.learning.calibration)"
    )
    loss: Literal["mae", "huber", "mse"] = "huber"
    huber_delta_months: float = Field(12.0, gt=0)
    dropout: float = Field(0.2, ge=0, lt=1)
    epochs: int = Field(25, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)
    lr_schedule: Literal["constant", "cosine", "plateau"] = "cosine"
    warmup_epochs: int = Field(1, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    early_stopping_patience: int = Field(8, ge=0, description="0 disables early stopping")
    fold: int = Field(-1, ge=-1, description="-1 uses train/val; k trains on all folds but k")
    precision: Literal["auto", "float32", "mixed_bfloat16"] = Field(
        "auto", description="auto: where bf16 can run natively (AVX512-BF16/AMX or a GPU), time "
        "a few training steps of the model under each and take mixed_bfloat16 only if it is "
        ">= 10% faster; float32 elsewhere (bf16 is emulated, slow, there)"
    )
    augment: AugmentParams = AugmentParams()
    # Several replicas (tf.distribute): see replicas.make_strategy and docs/distributed.md.
    # Each replica takes batch_size films per step, so the global batch grows with
    # the replica count and scale_lr grows the learning rate with it (the linear scaling rule).
    distribute: Literal["none", "mirrored", "multi_worker"] = Field(
        "none", description="none | mirrored (this machine's GPUs) | multi_worker (TF_CONFIG)"
    )
    scale_lr: bool = Field(True, description="multiply lr by the number of replicas")
    distill_weight: float = Field(
        0.0, ge=0, le=1, description="share of each training film's target taken from the "
        "teachers' reading (release pipeline's teacher stage, --teacher); 0 = labels only")


class EvaluateParams(_Section):
    tta: int = Field(0, ge=0, le=8, description="test-time augmentation passes; 0/1 = off")
    age_bands_months: list[float] = Field(
        default_factory=lambda: [0, 24, 60, 120, 156, 192, 240],
        description="edges of the age bands MAE is reported for",
    )

    @model_validator(mode="after")
    def _check_bands(self) -> "EvaluateParams":
        edges = self.age_bands_months
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError(f"age_bands_months must be >= 2 increasing edges, got {edges}")
        return self


class ExportParams(_Section):
    formats: list[Literal["keras", "savedmodel", "tflite"]] = Field(
        default_factory=lambda: ["keras", "savedmodel", "tflite"]
    )


class Params(_Section):
    fetch: FetchParams = FetchParams()
    preprocess: PreprocessParams = PreprocessParams()
    split: SplitParams = SplitParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()


SECTIONS: dict[str, type[BaseModel]] = {
    name: field.annotation for name, field in Params.model_fields.items()  # type: ignore[misc]
}


class ReleaseParams(_Section):
    """The ``release`` section of release/params.yaml: how the members become the shipped
    model (boneage.learning.release)."""

    name: str = Field("boneage-rsna100px", min_length=1)
    version: str = Field("1.0.0", min_length=1)
    members: list[str] = Field(default_factory=list, description="the members in the "
                               "ensemble (empty: every members.<name> of the file)")
    member_weights: Literal["equal", "fitted"] = Field(
        "fitted", description="fitted: non-negative weights summing to 1 that minimise the "
        "validation films' squared error; equal: the plain mean")
    coverage: float = Field(0.9, gt=0, lt=1, description="nominal coverage of the intervals")
    interval: Literal["age_band", "spread_age_band"] = Field(
        "age_band", description="split-conformal on the validation films, one quantile per "
        "band of predicted age; spread_age_band also scales by the members' spread")
    interval_bands_months: list[float] = Field(
        default_factory=lambda: [0, 24, 60, 120, 156, 192, 240])
    min_band_films: int = Field(100, ge=10, description="a band with fewer calibration films "
                                "borrows its neighbours'")
    refer_factor: float = Field(1.5, gt=1, description="an interval wider than this times the "
                                "median width asks for a radiologist's reading")
    age_bands_months: list[float] = Field(
        default_factory=lambda: [0, 24, 60, 120, 156, 192, 240],
        description="the bands the metrics and coverage are reported in")
    formats: list[Literal["keras", "tflite"]] = Field(
        default_factory=lambda: ["keras", "tflite"], description="the files each member ships: "
        "keras (always: Grad-CAM and restore_member read it) and tflite (read through LiteRT "
        "without TensorFlow; checked against the Keras reading on the validation films)")

    @field_validator("formats")
    @classmethod
    def _keras_ships(cls, formats: list[str]) -> list[str]:
        if "keras" not in formats:
            raise ValueError(f"release.formats must include keras (Grad-CAM and the "
                             f"distillation's teachers read it), got {formats}")
        return list(dict.fromkeys(formats))

    trained_at: dict[str, str] = Field(
        default_factory=dict, description="member -> git commit it was trained at, for members "
        "whose training.json predates the recorded commit")
    external_tests: dict[str, str] = Field(
        default_factory=dict, description="name -> a Kaggle-layout folder of films read from "
        "their files for a figure beside the test MAE (skipped where the folder is absent)")
    data_name: str = "RSNA Pediatric Bone Age Challenge 2017, training set"
    data_citation: str = ("Halabi SS et al. The RSNA Pediatric Bone Age Machine Learning "
                          "Challenge. Radiology 2019;290:498-503")
    data_terms: str = ("distributed by the RSNA and Stanford for research use; cite the "
                       "paper above; the images are not redistributed with boneage")


def load_release(path: str | Path = "params.yaml") -> tuple[ReleaseParams, list[str]]:
    """The ``release`` section and the names of the members it assembles."""
    path = Path(path)
    data = _read_yaml(path)
    try:
        params = ReleaseParams.model_validate(data.get("release") or {})
    except ValidationError as exc:
        raise ParamsError(_format_error(exc, path, "release")) from None
    available = sorted((data.get("members") or {}).keys())
    chosen = params.members or available
    unknown = sorted(set(chosen) - set(available))
    if not chosen or unknown:
        raise ParamsError(f"{path}: release.members names {unknown or 'no member'}; "
                          f"members here: {available}")
    return params, chosen


def _format_error(error: ValidationError, path: Path, prefix: str) -> str:
    lines = [f"{path}: invalid params"]
    for item in error.errors():
        key = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        got = item.get("input")
        shown = "" if item["type"] == "missing" else f" (got {got!r})"
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key; check its spelling against params.yaml")
        else:
            lines.append(f"  {key}: {item['msg']}{shown}")
    return "\n".join(lines)


def _read_yaml(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: top level must be a mapping of stage sections")
    return data


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate the whole file."""
    path = Path(path)
    data = _read_yaml(path)
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(_format_error(exc, path, "")) from None


def load_section(section: str, path: str | Path = "params.yaml"):
    """Load and validate one stage's section; the others are not looked at."""
    if section not in SECTIONS:
        raise ParamsError(f"unknown params section {section!r}; expected one of {sorted(SECTIONS)}")
    path = Path(path)
    data = _read_yaml(path).get(section) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: {section} must be a mapping")
    try:
        return SECTIONS[section].model_validate(data)
    except ValidationError as exc:
        raise ParamsError(_format_error(exc, path, section)) from None


def load_member(member: str, path: str | Path = "params.yaml") -> TrainParams:
    """The train params of one member of an ensemble (the release pipeline): the file's
    ``train`` section with ``members.<member>`` laid over it (``augment`` key by key), so
    the members share one recipe and each states only how it differs."""
    path = Path(path)
    data = _read_yaml(path)
    members = data.get("members") or {}
    if not isinstance(members, dict) or member not in members:
        raise ParamsError(f"{path}: no members.{member} section; members here: "
                          f"{sorted(members) if isinstance(members, dict) else members!r}")
    base, overlay = data.get("train") or {}, members[member] or {}
    if not isinstance(base, dict) or not isinstance(overlay, dict):
        raise ParamsError(f"{path}: train and members.{member} must be mappings")
    merged = {**base, **overlay}
    if isinstance(base.get("augment"), dict) and isinstance(overlay.get("augment"), dict):
        merged["augment"] = {**base["augment"], **overlay["augment"]}
    try:
        return TrainParams.model_validate(merged)
    except ValidationError as exc:
        raise ParamsError(_format_error(exc, path, f"train+members.{member}")) from None

