"""What a reading of one film says, for people (``text``) and programs (``to_dict``), and how
it words where sex and age came from; no model here, so the films of a folder can be read up
to the model's input while TensorFlow is still importing (:mod:`boneage.reading.preparation`).
"""

from __future__ import annotations

from dataclasses import dataclass

from boneage.reading.inputs import printable, reason

SYNTHETIC_WARNING = "trained on synthetic films: not for real radiographs"
CALL_WITHHELD = ("no difference, SD score or call: the model was trained on synthetic films "
                 "(force shows them)")


def trained_on_synthetic(card: dict) -> bool:
    """Whether a model card's data is the built-in synthetic films (``data.source``)."""
    data = card.get("data") or {}
    return bool(data.get("synthetic")) or str(data.get("source") or "").strip().lower() \
        == "synthetic"


SEX_FROM_DICOM = "from the DICOM PatientSex tag"
AGE_FROM_DICOM = "from the DICOM PatientAge tag"


@dataclass(frozen=True)
class Wording:
    """Where a reading says sex and age came from, and how it asks for a missing sex: in
    the command line's flags or in the web form's fields."""

    sex_given: str
    age_given: str
    ask_sex: str
    height_given: str = "given"
    ask_age: str = "give the chronological age"


CLI = Wording("from --sex", "from --chronological-age", "pass --sex M or F",
              "from --height-cm", "pass --chronological-age")
FORM = Wording("from the form", "from the form", "choose the sex (M or F) in the form",
               "from the form", "type the chronological age in the form")


@dataclass
class Reading:
    """One film's result as people and programs read it."""

    path: str
    months: float | None = None  # the ensemble mean
    per_model: list[float] | None = None
    spread: float | None = None  # SD between models (a rough uncertainty); None for one model
    male: int | None = None
    sex_source: str | None = None
    chronological_months: float | None = None
    age_source: str | None = None
    assessment: object | None = None  # boneage.reading.standards.Assessment
    heatmap: str | None = None  # path of the Grad-CAM PNG
    error: str | None = None
    checks: dict | None = None  # the film check's verdict (boneage.imaging.film_check)
    interval: tuple[float, float] | None = None  # calibrated prediction interval, months
    coverage: float | None = None  # its nominal coverage (0.9)
    refer: bool = False  # the interval is unusually wide: a radiologist should read the film
    refer_width: float | None = None  # the width above which a reading is referred
    model: dict | None = None  # which model read the film: name, version, data, MAE
    height: object | None = None  # boneage.reading.adult_height.Height: the current height
    adult_height: object | None = None  # boneage.reading.adult_height.AdultHeight
    warning: str | None = None  # SYNTHETIC_WARNING for a model of synthetic films

    def to_dict(self) -> dict:
        from boneage.kernel.ages import format_months

        row: dict = {"path": self.path}
        if self.checks is not None:
            row["checks"] = self.checks
        if self.error:
            row["error"] = self.error
            return row
        if self.warning:
            row["warning"] = self.warning
        row.update({
            "sex": "M" if self.male else "F",
            "sex_source": self.sex_source,
            "boneage_months": round(self.months, 1),
            "boneage_text": format_months(self.months),
        })
        if self.per_model is not None and len(self.per_model) > 1:
            row["models"] = [round(m, 1) for m in self.per_model]
            row["spread_months"] = round(self.spread, 1)
        if self.interval is not None:
            row["interval_months"] = [round(self.interval[0], 1), round(self.interval[1], 1)]
            row["interval_text"] = (f"{format_months(self.interval[0])} to "
                                    f"{format_months(self.interval[1])}")
            row["interval_coverage"] = self.coverage
            row["refer_to_radiologist"] = self.refer
        if self.model is not None:
            row["model"] = self.model
            row["model_text"] = describe_model(self.model)
        if self.chronological_months is not None:
            row["chronological_months"] = round(self.chronological_months, 1)
            row["chronological_text"] = format_months(self.chronological_months)
            row["age_source"] = self.age_source
            if self.assessment is not None:
                row.update(self.assessment.to_dict())
        if self.adult_height is not None:
            row.update(self.adult_height.to_dict())
        if self.heatmap:
            row["heatmap"] = self.heatmap
        return row

    def text(self) -> str:
        """The lines a radiologist reads for this film."""
        from boneage.kernel.ages import describe, format_months

        path = printable(self.path)
        if self.error:
            return f"{path}: not read: {printable(reason(self.path, self.error))}"
        sex = "male" if self.male else "female"
        lines = [f"{path}: bone age {describe(self.months)}"]
        if self.per_model is not None and len(self.per_model) > 1:
            lines[0] += (f" +- {self.spread:.1f} months (SD between {len(self.per_model)} models: "
                         + ", ".join(f"{m:.1f}" for m in self.per_model) + ")")
        if self.interval is not None:
            low, high = self.interval
            lines.append(f"  {self.coverage:.0%} interval: {low:.1f} to {high:.1f} months "
                         f"({format_months(low)} to {format_months(high)})")
            if self.refer:
                lines.append(f"  the interval is unusually wide (over {self.refer_width:.0f} "
                             "months): a radiologist should read this film")
        lines.append(f"  sex: {sex} ({self.sex_source})")
        if self.warning:
            lines.insert(1, f"  WARNING: {self.warning}")
        checks = self.checks or {}
        if checks.get("forced"):
            doubts = list(checks.get("reasons", []))
            if checks.get("inverted"):
                doubts.append("it looks inverted")
            lines.append("  WARNING: read on request (force) although the film check refused "
                         "it: " + "; ".join(doubts))
        a = self.assessment
        if self.chronological_months is not None:
            lines.append(f"  chronological age: {describe(self.chronological_months)} "
                         f"({self.age_source})")
            if a is None:
                lines.append(f"  {CALL_WITHHELD}")
            else:
                sign = "+" if a.difference_months >= 0 else "-"
                lines.append(f"  difference: {sign}{abs(a.difference_months):.1f} months "
                             f"({sign}{format_months(abs(a.difference_months))}), "
                             f"{a.z:+.1f} SD (G&P SD {a.sd_months:.1f} months at this age): "
                             f"{a.call.upper()}")
        if self.adult_height is not None:
            lines.append(self.adult_height.text())
        if self.heatmap:
            lines.append(f"  heatmap: {printable(self.heatmap)}")
        if self.model is not None:
            lines.append(f"  model: {describe_model(self.model)}")
        return "\n".join(lines)


def describe_model(model: dict) -> str:
    """One line naming the model that read a film: name, version, data and test MAE."""
    kind = model.get("variant", "")
    if model.get("members", 1) > 1:
        kind = f"ensemble of {model['members']}"
    text = f"{model.get('name')} {model.get('version')}" + (f" ({kind})" if kind else "")
    if model.get("data"):
        text += f", trained on {model['data']}"
    if model.get("test_mae_months") is not None:
        text += (f"; test MAE {model['test_mae_months']:.1f} months"
                 + (f" on {model['n_test']} films" if model.get("n_test") else ""))
    return text
