"""A reading as DICOM objects a PACS keeps next to the film: a Comprehensive SR the reporting
software reads, and a Secondary Capture any viewer shows, with the reading burned in.

Both are built with highdicom (not hand-assembled tags) from the source film's header, so
they land in the film's Patient and Study, each in a new Series of its own (an SR series
and a capture series: a series holds one modality). Their UIDs are derived from the source
SOP Instance UID and the model's identity (:func:`result_uid`), so reading the same film
again with the same model gives the same objects: a PACS keeps one copy, never two.

The SR (Comprehensive SR, root container "Bone age report") holds:

- the reading's status: read, or not read and why (a refused film gets an SR too);
- bone age (months), the spread between the ensemble's models, the interval when the
  reading has one; chronological age, the difference, the SD score, the Greulich & Pyle SD
  and the delayed/normal/advanced call with its rule;
- when the current height is known (PatientSize): the height (LOINC 8302-2 Body height, cm)
  and the adult height predicted by Bayley-Pinneau (cm), the per cent of mature height and
  the table used, or why no adult height was predicted (:mod:`boneage.reading.adult_height`);
- the algorithm's name and version (DCM 111001, 111003) and a reference to the source image
  (DCM 121112 "Source of Measurement").

Concepts with a DICOM (DCM) or UCUM code use it: Subject Age (121033),
Z-score (113071), Standard deviation of population (121414), Finding (121071), Comment
(121106). There is no standard code for bone age itself, so those concepts use this
project's private coding scheme :data:`SCHEME` ("99" prefix, PS3.3 8.1), listed in
docs/hospital.md.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

SCHEME = "99BONEAGE"
SR_SERIES_NUMBER = 9901  # high numbers: after the modality's series in a viewer's list
CAPTURE_SERIES_NUMBER = 9902
MANUFACTURER = "boneage (open source)"
CAPTURE_MAX_SIDE = 1024


@functools.cache
def _codes():
    """The concepts, built once on first use (highdicom is imported only by the hospital
    path); the SRs share them, read-only."""
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    private = {key: CodedConcept(value, SCHEME, meaning) for key, (value, meaning) in {
        "title": ("BA-0", "Bone age report"),
        "status": ("BA-1", "Reading status"),
        "read": ("BA-1-1", "Read"),
        "not_read": ("BA-1-2", "Not read"),
        "bone_age": ("BA-2", "Bone age (Greulich and Pyle), estimated"),
        "spread": ("BA-3", "Bone age spread between models (SD)"),
        "interval_low": ("BA-4", "Bone age interval, lower limit"),
        "interval_high": ("BA-5", "Bone age interval, upper limit"),
        "difference": ("BA-6", "Bone age minus chronological age"),
        "call": ("BA-7", "Bone age call"),
        "delayed": ("BA-7-1", "Delayed"),
        "normal": ("BA-7-2", "Normal"),
        "advanced": ("BA-7-3", "Advanced"),
        "reason": ("BA-9", "Reason not read"),
        "sex": ("BA-10", "Sex used for the reading"),
        "adult_height": ("BA-11", "Predicted adult height (Bayley-Pinneau)"),
        "mature_percent": ("BA-12", "Per cent of mature height reached"),
        "adult_height_table": ("BA-13", "Adult height prediction table"),
        "adult_height_not": ("BA-14", "Adult height not predicted"),
    }.items()}
    units = {"months": CodedConcept("mo", "UCUM", "month"),
             "cm": CodedConcept("cm", "UCUM", "centimeter"),
             "percent": CodedConcept("%", "UCUM", "percent"),
             "none": CodedConcept("1", "UCUM", "no units")}
    standard = {"subject_age": codes.DCM.SubjectAge,
                "z": codes.DCM.ZScore, "population_sd": codes.DCM.StandardDeviationOfPopulation,
                "finding": codes.DCM.Finding, "comment": codes.DCM.Comment,
                "algorithm": codes.DCM.AlgorithmName, "version": codes.DCM.AlgorithmVersion,
                "source": codes.DCM.SourceOfMeasurement,
                "body_height": CodedConcept("8302-2", "LN", "Body height")}
    return private, units, standard


@dataclass(frozen=True)
class ModelIdentity:
    """What the SR says read the film: the model's name and version."""

    name: str
    version: str

    @classmethod
    def of(cls, ensemble) -> "ModelIdentity":
        """From the export cards of an :class:`~boneage.reading.predictor.Ensemble`."""
        names, versions = [], []
        for predictor in ensemble.predictors:
            card = predictor.card
            names.append(str(card.get("name") or predictor.model_dir.name))
            versions.append(f"{card.get('boneage_version', '?')} "
                            f"({card.get('created_utc', 'unknown date')})")
        return cls(" + ".join(dict.fromkeys(names)), "; ".join(dict.fromkeys(versions)))


def result_uid(*parts: str) -> str:
    """A UID that is the same for the same parts (source UID, model, kind): re-reading a film
    gives the same SR and capture instead of a second copy."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[str(part) for part in parts]))


def _lines(reading) -> list[str]:
    """The reading in short lines (ASCII, for burning into the capture)."""
    from boneage.kernel.ages import format_months

    if reading.error:
        return ["BONE AGE: NOT READ", *_wrap(reading.error, 70)]
    lines = [f"BONE AGE {format_months(reading.months)} ({reading.months:.1f} months)"]
    interval = getattr(reading, "interval", None)
    if interval:
        lines[0] += f", interval {interval[0]:.0f}-{interval[1]:.0f} months"
    elif reading.spread is not None:
        lines[0] += f" +- {reading.spread:.1f} (SD between models)"
    lines.append(f"sex {'male' if reading.male else 'female'} ({reading.sex_source})")
    if reading.chronological_months is not None:
        a = reading.assessment
        lines.append(f"chronological age {format_months(reading.chronological_months)}; "
                     f"difference {a.difference_months:+.1f} months, {a.z:+.1f} SD: "
                     f"{a.call.upper()}")
    adult = getattr(reading, "adult_height", None)
    if adult is not None:
        lines.append(f"adult height (Bayley-Pinneau) {adult.adult_cm:.1f} cm, table "
                     f"{adult.table}" if not adult.refused
                     else f"adult height not predicted: {adult.refused}")
    if (reading.checks or {}).get("forced"):
        lines.append("WARNING: read on request although a check refused it")
    lines.append("Decision support: a radiologist reviews every reading")
    return lines


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text.encode("ascii", "replace").decode(), width) or [""]


def capture_pixels(image: np.ndarray, lines: list[str], heatmap: np.ndarray | None = None,
                   max_side: int = CAPTURE_MAX_SIDE) -> np.ndarray:
    """The film (float grey [0, 1]) shrunk to ``max_side``, with a text band under it;
    RGB uint8 with the Grad-CAM overlay when ``heatmap`` is given, else grey uint8."""
    from boneage.reading.explain import overlay

    # Shrunk first, then quantised: the full film (3 Mpx and more) is touched once, by the
    # resize, instead of by every step (22 ms of the node's time a film, profiled).
    picture = np.asarray(image, dtype=np.float32)
    if heatmap is not None and heatmap.shape != picture.shape:
        # the heatmap comes at the picture's size (explain.output_shape), not the film's
        picture = cv2.resize(picture, (heatmap.shape[1], heatmap.shape[0]),
                             interpolation=cv2.INTER_AREA)
    scale = max_side / max(picture.shape[:2])
    if scale < 1 and heatmap is None:
        picture = cv2.resize(picture, (max(1, round(picture.shape[1] * scale)),
                                       max(1, round(picture.shape[0] * scale))),
                             interpolation=cv2.INTER_AREA)
    picture = np.clip(np.round(picture * 255.0), 0, 255).astype(np.uint8)
    if heatmap is not None:
        picture = cv2.cvtColor(overlay(picture, heatmap), cv2.COLOR_BGR2RGB)
        scale = max_side / max(picture.shape[:2])
        if scale < 1:
            picture = cv2.resize(picture, (max(1, round(picture.shape[1] * scale)),
                                           max(1, round(picture.shape[0] * scale))),
                                 interpolation=cv2.INTER_AREA)
    width = max(picture.shape[1], 480)
    font_scale = width / 900
    line_height = max(14, int(32 * font_scale))
    wrapped = [piece for line in lines for piece in _wrap(line, max(20, int(width / (
        17 * font_scale))))]
    band_shape = (line_height * len(wrapped) + line_height // 2, width) + picture.shape[2:]
    band = np.zeros(band_shape, np.uint8)
    for index, line in enumerate(wrapped):
        cv2.putText(band, line, (8, line_height * (index + 1)), cv2.FONT_HERSHEY_SIMPLEX,
                    font_scale, (255,) * (3 if band.ndim == 3 else 1),
                    max(1, int(2 * font_scale)), cv2.LINE_AA)
    canvas = np.zeros((picture.shape[0],) + band.shape[1:], np.uint8)
    canvas[:, :picture.shape[1]] = picture
    return np.ascontiguousarray(np.concatenate([canvas, band], axis=0))


# Type 2 attributes of the Patient and General Study modules: present in every conformant
# film, possibly empty; some senders leave them out, and highdicom copies them.
_PATIENT_STUDY_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                        "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
                        "AccessionNumber")


def source_header(dataset):
    """The source film's header as the results copy it: pixels left out, missing Type 2
    patient and study attributes present and empty (as PS3.3 allows)."""
    header = dataset.copy()
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in header:
            del header[keyword]
    for keyword in _PATIENT_STUDY_TYPE2:
        if keyword not in header:
            setattr(header, keyword, "")
    return header


def build_sr(source, reading, model: ModelIdentity, *, source_is_image: bool = True):
    """The Comprehensive SR for one film (read or refused), in the film's study."""
    import highdicom as hd
    from highdicom.sr import (CodeContentItem, CompositeContentItem, ContainerContentItem,
                              ImageContentItem, NumContentItem, RelationshipTypeValues,
                              TextContentItem)

    from boneage.reading.standards import RULE, SOURCE

    private, units, standard = _codes()
    contains = RelationshipTypeValues.CONTAINS
    items = [
        TextContentItem(standard["algorithm"], model.name[:1024], contains),
        TextContentItem(standard["version"], model.version[:1024], contains),
    ]
    reference = (ImageContentItem if source_is_image else CompositeContentItem)(
        standard["source"], source.SOPClassUID, source.SOPInstanceUID,
        relationship_type=contains)
    items.append(reference)
    if reading.error:
        items += [CodeContentItem(private["status"], private["not_read"], contains),
                  TextContentItem(private["reason"], reading.error[:1024], contains)]
    else:
        items += [CodeContentItem(private["status"], private["read"], contains),
                  NumContentItem(private["bone_age"], round(reading.months, 1),
                                 units["months"], relationship_type=contains),
                  TextContentItem(private["sex"], f"{'M' if reading.male else 'F'} "
                                  f"({reading.sex_source})", contains)]
        if reading.spread is not None:
            items.append(NumContentItem(private["spread"], round(reading.spread, 1),
                                        units["months"], relationship_type=contains))
        interval = getattr(reading, "interval", None)
        if interval:
            items += [NumContentItem(private["interval_low"], round(float(interval[0]), 1),
                                     units["months"], relationship_type=contains),
                      NumContentItem(private["interval_high"], round(float(interval[1]), 1),
                                     units["months"], relationship_type=contains)]
        if reading.chronological_months is not None:
            a = reading.assessment
            items += [
                NumContentItem(standard["subject_age"], round(reading.chronological_months, 1),
                               units["months"], relationship_type=contains),
                NumContentItem(private["difference"], round(a.difference_months, 1),
                               units["months"], relationship_type=contains),
                NumContentItem(standard["population_sd"], round(a.sd_months, 2),
                               units["months"], relationship_type=contains),
                NumContentItem(standard["z"], round(a.z, 2), units["none"],
                               relationship_type=contains),
                CodeContentItem(private["call"], private[a.call], contains),
                TextContentItem(standard["comment"], f"{RULE}. SD source: {SOURCE}"[:1024],
                                contains),
            ]
        if getattr(reading, "adult_height", None) is not None:
            items += _adult_height_items(reading.adult_height, private, units, standard)
        if (reading.checks or {}).get("forced"):
            items.append(TextContentItem(
                standard["comment"], ("Read on request (force) although a check refused it: "
                                      + "; ".join(reading.checks.get("reasons", [])))[:1024],
                contains))
    items.append(TextContentItem(standard["finding"], " / ".join(
        _lines(reading))[:1024], contains))
    root = ContainerContentItem(private["title"])
    root.ContentSequence = hd.sr.ContentSequence(items, is_root=False)
    model_key = f"{model.name}|{model.version}"
    return hd.sr.ComprehensiveSR(
        evidence=[source], content=root,
        series_instance_uid=result_uid(source.StudyInstanceUID, model_key, "sr-series"),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=result_uid(source.SOPInstanceUID, model_key, "sr"),
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description="Bone age report (boneage)")


def _adult_height_items(adult, private, units, standard) -> list:
    """The current height (LOINC 8302-2 Body height, cm) and the Bayley-Pinneau adult height
    with its per cent of mature height and table, or the reason none was predicted."""
    from highdicom.sr import NumContentItem, RelationshipTypeValues, TextContentItem

    from boneage.reading.adult_height import SOURCE

    contains = RelationshipTypeValues.CONTAINS
    items = []
    if adult.height.cm is not None:
        items.append(NumContentItem(standard["body_height"], round(adult.height.cm, 1),
                                    units["cm"], relationship_type=contains))
    if adult.refused:
        return items + [TextContentItem(private["adult_height_not"], adult.refused[:1024],
                                        contains)]
    method = f"{adult.table_text()}; {SOURCE}" + (f"; {adult.note}" if adult.note else "")
    return items + [
        NumContentItem(private["adult_height"], round(adult.adult_cm, 1), units["cm"],
                       relationship_type=contains),
        NumContentItem(private["mature_percent"], round(adult.percent, 2), units["percent"],
                       relationship_type=contains),
        TextContentItem(private["adult_height_table"], method[:1024], contains),
    ]


def build_capture(source, reading, image: np.ndarray, model: ModelIdentity,
                  heatmap: np.ndarray | None = None):
    """The Secondary Capture: the film with the reading burned in (and the Grad-CAM overlay
    when ``heatmap`` is given), in the film's study."""
    import highdicom as hd

    pixels = capture_pixels(image, _lines(reading), heatmap)
    model_key = f"{model.name}|{model.version}"
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=pixels,
        photometric_interpretation="RGB" if pixels.ndim == 3 else "MONOCHROME2",
        bits_allocated=8, coordinate_system="PATIENT",
        series_instance_uid=result_uid(source.StudyInstanceUID, model_key, "capture-series"),
        series_number=CAPTURE_SERIES_NUMBER,
        sop_instance_uid=result_uid(source.SOPInstanceUID, model_key, "capture"),
        instance_number=int(source.get("InstanceNumber") or 1),
        manufacturer=MANUFACTURER, patient_orientation=("L", "F"),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        series_description="Bone age capture (boneage)" + (" with Grad-CAM"
                                                           if heatmap is not None else ""))
    capture.BurnedInAnnotation = "YES"
    capture.ImageComments = "Bone age reading burned in; decision support, reviewed by a radiologist"
    return capture
