"""Is this a hand radiograph? A fast, deterministic check before a film is read (issue 14).

Without it, a colour photograph, a black frame, a gradient or a chest slice each get a bone
age, and an inverted film (bone dark, background bright) reads as a much younger hand.
:func:`check_film` looks at the decoded grey film (what :func:`boneage.imaging.decoding.read_film`
gives, before :func:`boneage.imaging.transforms.prepare`) and answers with a :class:`FilmCheck`:
accepted or not, why not, whether it looks inverted, and the measured features.

This module holds the verdict: :class:`FilmCheck`, :func:`check_film`, the colour measure
(:func:`colour_fraction`, :func:`colour_fraction_of`), :func:`check_read_film` (the gate
predict and serve read a film through) and the thresholds :func:`check_film` applies itself.
The working copy and the search for the hand, with their thresholds, are
:mod:`boneage.imaging.hand_search`; those thresholds are importable from here too.

Only NumPy and OpenCV, on a copy shrunk to :data:`WORK_SIDE` px (a few ms a film, whatever
its size). Every threshold is a named constant, here or in :mod:`boneage.imaging.hand_search`, with
the reason it is there; ``bench/film_check.py`` measures them on the RSNA films, synthetic
phantom films and a set of non-hand images.

The features, in the order they are checked:

* colour: the share of clearly coloured pixels in the file (:func:`colour_fraction`);
* size and shape of the frame;
* intensity spread (a blank frame has none);
* high-frequency noise against the film's own contrast (random noise, empty exposures);
* edge density (smooth gradients and vignettes have no edges);
* lines of text and small blobs (a page of text is lines of letters);
* the hand (:func:`boneage.imaging.hand_search.find_hand`): among the regions that grey-level
  thresholds cut out (Otsu, and Otsu again on each side of it, and the notches in the
  outline of a large field), one that is of hand size, meets at most two sides of the
  frame, does not fill its convex hull, differs from its surroundings, has texture inside
  (bones), lies on a smooth background (air, not a scene), and shows three or more deep,
  narrow notches side by side: the gaps between the fingers (convexity defects of its
  outline). Brighter than its surroundings: a film as usual; darker: an inverted film,
  read after inverting it;
* the grey levels inside that hand, as stored: too few distinct ones, or most of the hand
  at one level, is a posterised or clipped film ("too few grey levels to read").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from boneage.imaging.decoding import Film
from boneage.kernel.errors import FORCE_HINT, NotAFilmError

# The hand search, and its thresholds: importable from here as before the split
# (bench/film_check.py reads them), but read in boneage.imaging.hand_search: patch them there.
from boneage.imaging.hand_search import (  # noqa: F401  (the thresholds are re-exported)
    BLOB_AREA,
    BORDER,
    FIELD_AREA,
    GAP_DEPTH,
    MAX_BACKGROUND_EDGES,
    MAX_GAP_OPENING,
    MAX_HAND_AREA,
    MAX_HAND_SIDES,
    MAX_SOLIDITY,
    MIN_BACKGROUND_SMOOTH,
    MIN_GAPS,
    MIN_HAND_AREA,
    MIN_LOCAL_CONTRAST,
    MIN_TEXTURE,
    TEXT_LINE,
    WEB_SPAN,
    WORK_SIDE,
    find_hand,
    working_copy,
)

__all__ = ["FilmCheck", "check_film", "colour_fraction", "colour_fraction_of"]

# ----------------------------------------------------------------------------- thresholds

COLOUR_CHROMA = 32
"""A pixel is coloured when its channels differ by this many 8-bit levels: JPEG chroma noise
on a grey picture stays below it; skin, sky and stained tissue are far above."""

MAX_COLOUR_FRACTION = 0.05
"""Refused as a colour photograph above this share of coloured pixels: radiographs are grey
(0 on every RSNA film, including the two stored as RGBA PNGs), and a few coloured annotation
marks stay well under 5 %; the colour photographs measured are 34-100 % (a star field, mostly
black sky, 3 %: refused for its shape instead)."""

MIN_SIDE = 48
"""Refused below this many pixels on the shorter side: nothing can be read from less (the
model input is 96 px), and DICOM dose grids and thumbnails are this small."""

MAX_ASPECT = 3.0
"""Refused above this ratio of long to short side: hand films are about 1.3:1 (at most ~2:1
with the forearm); strips and banners are not films."""

MIN_SPREAD = 0.01
"""Refused as blank when the 1st to 99th percentile of the grey levels spans less than 1 %
of the full scale (2.5 levels of 8 bits). Kept this low so that a 12-bit film stored in a
16-bit PNG (at most 6 % of the scale) still passes; a nearly blank frame with sensor noise
is caught by :data:`MAX_NOISE` instead, once its contrast is stretched."""

MAX_NOISE = 0.1
"""Refused as noise above this ratio of pixel-scale detail (the film minus its 1 px Gaussian
blur, standard deviation) to the stretched 1-99 % range: radiographs are smooth at the scale
of the working copy (at most 0.074 on the 11,947 films measured), random noise 0.15-0.3."""

EDGE_LEVEL = 0.04
"""A pixel is on an edge when the stretched film changes by this much per pixel there
(Sobel on the 1 px blur): the outline of a hand and its bones do; a gradient across the
frame changes by 1/128 per pixel."""

MIN_EDGES = 0.02
"""Refused as a smooth gradient or empty field below this share of edge pixels: a hand's
outline and bones make 5-40 %."""

MAX_BLOBS = 40
"""Refused as text or a document above this many small separate blobs (letters; between
:data:`boneage.imaging.hand_search.BLOB_AREA` of the frame) unless the frame is noise: a film has a
marker and a few letters at most."""

MIN_TEXT_LINES = 6
"""Refused as text or a document from this many lines of text: thin level bands (at most
:data:`boneage.imaging.hand_search.TEXT_LINE` high, at least 3x as long and 10 % of the frame
across), which is what a line of small print becomes at :data:`WORK_SIDE` px (a page:
6-90). Only level ones: fingers are upright. A film's marker and labels make at most 4 (on
23,894 films and inverted films)."""

MIN_HAND_LEVELS = 10
"""Refused as posterised ("too few grey levels to read") below this many distinct stored grey
levels inside the hand (sampled at up to 512 px a side): bone, soft tissue and their edges
take many. The fewest on the RSNA films: 15 (a 100 px film; 18 at the 1st percentile, 147 at
full resolution), phantoms 62; a film cut to 4 levels (issue 22: a 16-bit PNG that read
142.5 months instead of 171.2) or to 8 has that many, whatever its bit depth."""

MAX_HAND_ONE_LEVEL = 0.5
"""... or when more than this share of the hand is at one grey level: a clipped (saturated or
burnt-out) exposure, where bone and tissue merge into one value. At most 21 % on the RSNA
films (a 1-in-20 sample of the 100 px set), 14 % at full resolution."""

SMOOTH_LEVEL = 0.015
"""A background pixel is smooth when the film, blurred by 2 px, changes by less than this
per pixel there (the exposed plate and the collimator shadow; not photo texture)."""

# ----------------------------------------------------------------------------- result


@dataclass(frozen=True)
class FilmCheck:
    """The verdict on one film.

    ``accepted``: it looks like a hand radiograph (read it). ``inverted``: it looks like one
    with bone dark and background bright; read it after inverting (``1 - image``) and say so.
    ``reasons``: why it was refused, in words for the user (empty when accepted).
    ``failed``: the short codes of the checks it failed (``colour``, ``size``, ``blank``,
    ``noise``, ``smooth``, ``text``, ``no_hand``, ``levels``). ``scores``: every measured feature.
    """

    accepted: bool
    inverted: bool
    reasons: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    failed: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        """One line for a log or an API answer."""
        if not self.accepted:
            return "not read: " + "; ".join(self.reasons)
        if self.inverted:
            return ("the film looks inverted (background brighter than the hand); "
                    "it was inverted before reading")
        return "looks like a hand radiograph"

    def to_dict(self) -> dict:
        """Machine-readable form, for a ``checks`` field of a report or API answer."""
        return {
            "accepted": self.accepted,
            "inverted": self.inverted,
            "failed": list(self.failed),
            "reasons": list(self.reasons),
            "scores": {k: (round(v, 4) if isinstance(v, float) else v)
                       for k, v in self.scores.items()},
        }


# ----------------------------------------------------------------------------- colour


def colour_fraction_of(image: np.ndarray) -> float:
    """Share of clearly coloured pixels (channels apart by :data:`COLOUR_CHROMA` 8-bit levels)
    of a decoded BGR(A) array; 0 for a grey (2-D or one-channel) array."""
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        return 0.0
    height, width = image.shape[:2]
    step = max(1, min(height, width) // 256)
    pixels = image[::step, ::step, :3]
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        pixels = pixels.astype(np.float32)
        top = float(np.nanmax(pixels)) if pixels.size else 0.0
        pixels = np.clip(pixels * (255.0 / top if top > 1.0 else 255.0), 0, 255).astype(np.uint8)
    chroma = pixels.max(axis=2).astype(np.int16) - pixels.min(axis=2)
    return float((chroma >= COLOUR_CHROMA).mean())


def colour_fraction(data: bytes) -> float:
    """Share of clearly coloured pixels in an encoded image file, for ``check_film(colour=)``.

    0 for DICOM (its pixels are read as grey by :mod:`boneage.imaging.dicom`) and for grey PNG and
    JPEG files (from the header, nothing decoded). Other files are decoded reduced (1/4 a
    side, which libjpeg does almost for free) in colour. Call it after the film itself was
    decoded (:func:`boneage.imaging.decoding.read_film`), which has checked the size in the header:
    this function does not check sizes again.
    """
    if not data:
        return 0.0
    if len(data) > 132 and data[128:132] == b"DICM":
        return 0.0
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 and data[12:16] == b"IHDR" \
            and data[25] in (0, 4):  # colour type 0 (grey) or 4 (grey + alpha)
        return 0.0
    if data[:3] == b"\xff\xd8\xff" and _jpeg_components(data) == 1:
        return 0.0
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_REDUCED_COLOR_4)
    except cv2.error:
        return 0.0
    return colour_fraction_of(image) if image is not None else 0.0


def _jpeg_components(data: bytes) -> int | None:
    """Number of colour components in a JPEG's first frame header (SOFn), None if not found."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = int.from_bytes(data[position + 2:position + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                      0xCF) and position + 9 < len(data):
            return data[position + 9]
        if marker == 0xDA:  # start of scan before any frame header
            return None
        position += 2 + length
    return None


# ----------------------------------------------------------------------------- the check


def check_film(image: np.ndarray, *, colour: float | None = None) -> FilmCheck:
    """Check that a decoded film looks like a hand radiograph.

    ``image``: the film as decoded, before :func:`boneage.imaging.transforms.prepare`: a 2-D grey
    array, uint8, uint16 or float (float in [0, 1] as :func:`boneage.imaging.decoding.read_film`
    gives it; other float ranges are stretched), any size. A 3-D colour array (BGR, as
    OpenCV decodes) is accepted too and its colour measured from its channels.
    ``colour``: the share of coloured pixels of the original file (:func:`colour_fraction`);
    None to measure it from ``image`` (0 for a grey array).
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if colour is None:
        colour = colour_fraction_of(image)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = _grey(image)
    if image.ndim != 2:
        raise ValueError(f"check_film needs a 2-D grey image (or a BGR(A) one), got shape "
                         f"{image.shape}")
    height, width = image.shape
    scores: dict[str, float] = {"colour": float(colour), "width": float(width),
                                "height": float(height)}
    failed: list[str] = []
    reasons: list[str] = []

    def refuse(code: str, reason: str) -> None:
        failed.append(code)
        reasons.append(reason)

    if colour > MAX_COLOUR_FRACTION:
        refuse("colour", f"looks like a colour photograph ({colour:.0%} of pixels coloured), "
                         "not a radiograph")
    aspect = max(height, width) / max(1, min(height, width))
    scores["aspect"] = float(aspect)
    if min(height, width) < MIN_SIDE:
        refuse("size", f"image is only {width}x{height} px; a hand radiograph needs at least "
                       f"{MIN_SIDE} px a side")
        return _result(False, False, reasons, scores, failed)
    if aspect > MAX_ASPECT:
        refuse("size", f"image is {width}x{height} px (aspect {aspect:.1f}:1); a hand "
                       f"radiograph is at most {MAX_ASPECT:.0f}:1")
        return _result(False, False, reasons, scores, failed)

    small = working_copy(image)
    low, high = (float(v) for v in np.percentile(small, [1.0, 99.0]))
    spread = high - low
    scores["spread"] = spread
    if not spread >= MIN_SPREAD:  # also NaN
        refuse("blank", f"blank or nearly uniform frame (grey levels span {spread:.1%} of the "
                        "scale)")
        return _result(False, False, reasons, scores, failed)

    norm = np.clip((small - low) / spread, 0.0, 1.0).astype(np.float32)
    blur = cv2.GaussianBlur(norm, (0, 0), 1.0)
    noise = float(np.std(norm - blur))
    edge = _gradient(blur) > EDGE_LEVEL
    edges = float(edge.mean())
    scores["noise"] = noise
    scores["edges"] = edges

    level8 = np.round(blur * 255.0).astype(np.uint8)
    smooth = _gradient(cv2.GaussianBlur(norm, (0, 0), 2.0)) < SMOOTH_LEVEL
    hand, (blobs, lines) = find_hand(level8, norm, edge, smooth)
    scores["blobs"] = float(blobs)
    scores["text_lines"] = float(lines)
    text = lines >= MIN_TEXT_LINES or (blobs > MAX_BLOBS and noise <= MAX_NOISE)
    if text:  # letters are sharp detail too: that is the reason, not noise
        refuse("text", f"looks like text or a document ({lines} lines of text, {blobs} small "
                       "separate marks)")
    elif noise > MAX_NOISE:
        refuse("noise", f"looks like noise, not a film (pixel-scale noise {noise:.2f} of the "
                        f"contrast, films stay under {MAX_NOISE})")
    if edges < MIN_EDGES:
        refuse("smooth", f"smooth gradient or empty field: almost no edges ({edges:.1%} of "
                         f"pixels, a hand film has over {MIN_EDGES:.0%})")
    scores.update(hand.scores)
    if hand.best is None:
        refuse("no_hand", "no hand found: " + hand.why)
    else:
        levels, one_level = _hand_levels(image, hand.best["mask"])
        scores["hand_levels"] = float(levels)
        scores["hand_one_level"] = one_level
        if levels < MIN_HAND_LEVELS or one_level > MAX_HAND_ONE_LEVEL:
            detail = (f"{levels} distinct levels in the hand" if levels < MIN_HAND_LEVELS
                      else f"{one_level:.0%} of the hand at one level")
            refuse("levels", f"too few grey levels to read ({detail}; posterised or clipped? "
                             "export the original film)")
    inverted = hand.best is not None and hand.best["local"] < 0
    accepted = not failed
    return _result(accepted, inverted and accepted, reasons, scores, failed)


def _hand_levels(image: np.ndarray, mask: np.ndarray) -> tuple[int, float]:
    """(distinct grey levels, share of the commonest level) of the stored pixels inside the
    hand (``mask``: the working copy's region), sampled at up to 512 px a side."""
    height, width = image.shape
    step = max(1, max(height, width) // 512)
    sample = image[::step, ::step]
    inside = cv2.resize(mask.astype(np.uint8), (sample.shape[1], sample.shape[0]),
                        interpolation=cv2.INTER_NEAREST).astype(bool)
    values = sample[inside]
    if values.size == 0:
        return 0, 1.0
    _, counts = np.unique(values, return_counts=True)
    return int(counts.size), float(counts.max() / counts.sum())


def _gradient(image: np.ndarray) -> np.ndarray:
    """Grey-level change per pixel (Sobel magnitude; Sobel's 3x3 kernel gains 8x a step)."""
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy) * np.float32(1.0 / 8.0)


def _result(accepted, inverted, reasons, scores, failed) -> FilmCheck:
    return FilmCheck(bool(accepted), bool(inverted), list(reasons), dict(scores), tuple(failed))


def _grey(image: np.ndarray) -> np.ndarray:
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        image = image.astype(np.float32)
    return cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_BGR2GRAY)


def check_decoded(film: Film) -> FilmCheck:
    """The film check on a decoded film as stored (:attr:`Film.pixels`: the stored levels,
    colour measured from its own channels; DICOM's grey floats): one verdict for the
    preprocess stage's report and for predict and serve alike."""
    return check_film(film.pixels)


def check_read_film(film: Film, name: str = "image", *, force: bool = False) -> Film:
    """The film check (:mod:`boneage.imaging.film_check`) on a decoded film, as predict and serve
    read a film: what does not look like a hand radiograph, or looks inverted (bone dark), is
    refused with the reason unless ``force``; ``film.meta["checks"]`` records the verdict for
    the reading's machine-readable ``checks`` field.

    An inverted-looking film is refused, not inverted back: a bright collimation border
    around a normal film can look like an inverted background, and reading a film the wrong
    way up gives a confident wrong age, so the user decides (invert the file, or force).
    """
    check = check_decoded(film)
    checks = {**check.to_dict(), "forced": False}
    problems = list(check.reasons) if not check.accepted else []
    header = film.meta.get("header")  # a DICOM's verdict (boneage.imaging.dicom_header)
    if header is not None:
        checks["header"] = header
        if header.get("reasons"):  # only there when forced: the film is read, and says why not
            checks["accepted"] = False
            checks["reasons"] = list(header["reasons"]) + checks["reasons"]
            problems = list(header["reasons"]) + problems
    if check.inverted:
        problems.append("it looks inverted (bone darker than the background); save it with "
                        "bone bright")
    if problems and not force:
        raise NotAFilmError(f"{name}: not read: " + "; ".join(problems) + f"; {FORCE_HINT}",
                            checks)
    checks["forced"] = bool(problems)
    return Film(film.pixels, {**film.meta, "checks": checks})
