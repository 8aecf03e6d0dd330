"""The DICOM header speaks first: is this a projection radiograph of the hand or wrist?

A DICOM says what it is before a single pixel is decoded: its ``Modality`` (0008,0060), its
``BodyPartExamined`` (0018,0015) and, for digital X-ray, its ``PresentationIntentType``
(0008,0068). A CT 3D rendering of an ankle or an axial abdominal MR slice can pass a pixel
check that was built for hand films (it did, on non-hand images gathered outside the
project); their headers said CT and MR. So :func:`boneage.imaging.dicom.read_dicom` asks
:func:`header_reasons` first and refuses, naming the attribute and its value, unless the
user forces the read (``--force``, web API ``force=true``, the node's ``--force``).

What is accepted, and why (decided here, documented in docs/hospital.md):

- **Modality** (PS3.3 C.7.3.1.1.1): ``CR`` (computed radiography), ``DX`` (digital
  radiography) and ``RG`` (radiographic imaging, conventional film/screen, e.g. a digitised
  film) are projection radiographs and accepted. ``OT`` (other) and an absent or empty
  Modality say nothing: accepted, the pixel film check decides (scanned films often come as
  Secondary Capture with ``OT``). Everything else is refused, including X-ray modalities that
  are projections but never a hand film for bone age: ``MG`` (mammography), ``XA``/``RF``
  (angiography, fluoroscopy), ``IO``/``PX`` (dental), ``BMD`` (densitometry), ``RTIMAGE``.
- **BodyPartExamined**: a value naming the hand or wrist (``HAND``, ``WRIST``, ``FINGER``,
  ``THUMB``, ``L HAND PA``, ``HANDGELENK``, ``MAIN``, ``BONE AGE`` ...) is accepted; so is a
  value naming no particular part (absent, ``EXTREMITY``, ``UPPER EXTREMITY``, ``OTHER``)
  and free text this module does not recognise (the film check decides). A value naming
  another part (``CHEST``, ``KNEE``, ``FOOT``, ``FOREARM``, ``SKULL`` ..., the defined terms
  of PS3.16 Annex L as PACS send them) is refused. A value that names the hand *and*
  another part (``HAND FOOT``) is accepted: the hand is there.
- **PresentationIntentType** ``FOR PROCESSING``: raw detector data a modality sends next to
  the image meant to be read (``FOR PRESENTATION``); refused, the viewer's image is asked for.

Reads the already-parsed header (a pydicom Dataset): nothing here touches the pixel data.
"""

from __future__ import annotations

import re

PROJECTION_MODALITIES = {"CR": "computed radiography", "DX": "digital radiography",
                         "RG": "radiographic imaging (film/screen)"}
UNSPECIFIC_MODALITIES = {"", "OT"}  # say nothing about the picture: the film check decides

MODALITY_NAMES = {
    "CT": "computed tomography", "MR": "magnetic resonance", "US": "ultrasound",
    "NM": "nuclear medicine", "PT": "positron emission tomography", "MG": "mammography",
    "XA": "X-ray angiography", "RF": "radiofluoroscopy", "IO": "intra-oral (dental) radiography",
    "PX": "panoramic (dental) X-ray", "BMD": "bone densitometry", "RTIMAGE": "radiotherapy image",
    "ES": "endoscopy", "XC": "external-camera photography", "OP": "ophthalmic photography",
    "SM": "slide microscopy", "GM": "general microscopy", "DG": "diaphanography",
    "OCT": "optical coherence tomography", "IVUS": "intravascular ultrasound",
    "SR": "structured report", "DOC": "document", "SEG": "segmentation",
    "PR": "presentation state", "KO": "key object selection", "TG": "thermography",
    "ECG": "electrocardiography", "EPS": "cardiac electrophysiology", "HD": "haemodynamic waveform",
}

# Stems found anywhere in the value with its spaces and punctuation removed ('L HAND PA',
# 'HAND_LT', 'HANDGELENK', 'BONEAGE'), and whole words in other languages.
_HAND_STEMS = ("HAND", "WRIST", "FINGER", "THUMB", "CARP", "BONEAGE", "KNOCHENALTER")
_HAND_WORDS = {"MAIN", "MAINS", "MANO", "MANOS", "MAO", "POIGNET", "MUNECA", "POLSO", "PUNHO",
               "POLS", "DIGIT", "DIGITS", "PHALANX", "PHALANGES"}
# Names of other parts, as whole words or inside the compacted value (CSPINE, ABDOMENPELVIS).
_OTHER_PARTS = (
    "ABDOMEN", "ANKLE", "ARM", "FOREARM", "HUMERUS", "ELBOW", "SHOULDER", "CLAVICLE", "SCAPULA",
    "BREAST", "BRAIN", "HEAD", "SKULL", "FACE", "ORBIT", "SINUS", "JAW", "MANDIBLE", "TMJ",
    "NECK", "CHEST", "THORAX", "RIB", "RIBS", "STERNUM", "HEART", "LUNG", "SPINE", "CSPINE",
    "TSPINE", "LSPINE", "SSPINE", "COCCYX", "SACRUM", "PELVIS", "HIP", "FEMUR", "KNEE",
    "PATELLA", "LEG", "TIBIA", "FIBULA", "FOOT", "FEET", "TOE", "TOES", "HEEL", "CALCANEUS",
    "KIDNEY", "LIVER", "BLADDER", "PROSTATE", "UTERUS", "COLON", "STOMACH", "ESOPHAGUS", "EYE",
    "EAR", "NOSE", "TOOTH", "TEETH", "DENTAL", "WHOLEBODY", "THYROID", "ZYGOMA", "NASAL",
)
_COMPOUND_PARTS = ("ABDOMEN", "CHEST", "SPINE", "PELVIS", "SKULL", "KNEE", "ANKLE", "FOOT",
                   "SHOULDER", "ELBOW", "FOREARM", "HUMERUS", "FEMUR", "WHOLEBODY", "BREAST",
                   "LOWEREXTREMIT", "LOWERLIMB")


def _words(value: str) -> list[str]:
    return re.findall(r"[A-Z]+", value.upper())


def body_part_verdict(value: str) -> str:
    """'hand', 'unspecific' or 'other' for a BodyPartExamined value (see the module doc)."""
    words = _words(value)
    compact = "".join(words)
    if any(stem in compact for stem in _HAND_STEMS) or any(w in _HAND_WORDS for w in words):
        return "hand"
    if any(word in _OTHER_PARTS for word in words) \
            or any(part in compact for part in _COMPOUND_PARTS):
        return "other"
    return "unspecific"


def describe_modality(modality: str) -> str:
    name = PROJECTION_MODALITIES.get(modality) or MODALITY_NAMES.get(modality)
    return f"{modality} ({name})" if name else repr(modality)


def header_reasons(dataset) -> list[str]:
    """Why this DICOM's header says it is not a hand radiograph; [] when it may be one.

    Each reason names the attribute, its tag and its value, in words a PACS administrator
    can act on.
    """
    reasons = []
    modality = _text(dataset, "Modality").upper()
    if modality not in PROJECTION_MODALITIES and modality not in UNSPECIFIC_MODALITIES:
        reasons.append(f"Modality (0008,0060) is {describe_modality(modality)}, not a "
                       "projection radiograph (CR, DX or RG)")
    body_part = _text(dataset, "BodyPartExamined")
    if body_part and body_part_verdict(body_part) == "other":
        reasons.append(f"BodyPartExamined (0018,0015) is {body_part!r}, not the hand or wrist")
    intent = _text(dataset, "PresentationIntentType").upper()
    if intent == "FOR PROCESSING":
        reasons.append("PresentationIntentType (0008,0068) is FOR PROCESSING (raw detector "
                       "data); send the FOR PRESENTATION image")
    return reasons


def header_summary(dataset) -> dict:
    """The attributes the verdict read, for a reading's machine-readable ``checks``."""
    return {"modality": _text(dataset, "Modality").upper() or None,
            "body_part_examined": _text(dataset, "BodyPartExamined") or None}


def _text(dataset, keyword: str) -> str:
    try:
        value = dataset.get(keyword, "")
        if value is None:
            return ""
        if not isinstance(value, (str, bytes)):  # a multi-valued CS: the first value
            value = value[0] if len(value) else ""
        return str(value).strip()
    except Exception:  # noqa: BLE001 - an unreadable tag is as good as none
        return ""
