"""Is this a hand radiograph? A fast, deterministic check before a film is read (issue 14).

Without it, a colour photograph, a black frame, a gradient or a chest slice each get a bone
age, and an inverted film (bone dark, background bright) reads as a much younger hand.
:func:`check_film` looks at the decoded grey film (what :func:`boneage.decoding.read_film`
gives, before :func:`boneage.imaging.prepare`) and answers with a :class:`FilmCheck`:
accepted or not, why not, whether it looks inverted, and the measured features.

Only NumPy and OpenCV, on a copy shrunk to :data:`WORK_SIDE` px (a few ms a film, whatever
its size). Every
threshold is a named constant below, with the reason it is there; ``bench/film_check.py``
measures them on the RSNA films, synthetic phantom films and a set of non-hand images.

The features, in the order they are checked:

* colour: the share of clearly coloured pixels in the file (:func:`colour_fraction`);
* size and shape of the frame;
* intensity spread (a blank frame has none);
* high-frequency noise against the film's own contrast (random noise, empty exposures);
* edge density (smooth gradients and vignettes have no edges);
* lines of text and small blobs (a page of text is lines of letters);
* the hand: among the regions that grey-level thresholds cut out (Otsu, and Otsu again
  on each side of it, and the notches in the outline of a large field), one that is of
  hand size, meets at most two sides of the frame, does not fill its convex hull, differs
  from its surroundings, has texture inside (bones), lies on a smooth background (air, not
  a scene), and shows three or more deep, narrow notches side by side: the gaps between
  the fingers (convexity defects of its outline). Brighter than its surroundings: a film as
  usual; darker: an inverted film, read after inverting it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from boneage.decoding import Film
from boneage.errors import NotAFilmError

__all__ = ["FilmCheck", "check_film", "colour_fraction", "colour_fraction_of"]

# ----------------------------------------------------------------------------- thresholds

WORK_SIDE = 128
"""Long side (px) of the working copy: fingers stay several pixels wide even on the 100 px
RSNA films, and every feature costs well under a millisecond at this size."""

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
:data:`BLOB_AREA` of the frame) unless the frame is noise: a film has a marker and a few
letters at most."""

BLOB_AREA = (0.0002, 0.01)
"""Size range of a blob counted by :data:`MAX_BLOBS`, as shares of the frame."""

MIN_TEXT_LINES = 6
"""Refused as text or a document from this many lines of text: thin level bands (at most
:data:`TEXT_LINE` high, at least 3x as long and 10 % of the frame across), which is what a
line of small print becomes at :data:`WORK_SIDE` px (a page: 6-90). Only level ones: fingers
are upright. A film's marker and labels make at most 4 (on 23,894 films and inverted films)."""

TEXT_LINE = 0.05
"""Largest thickness of a line of text, as a share of the frame's side."""

BORDER = 2
"""Pixels of the frame's edge left out of the regions: thin bright borders and plate edges
at the very edge of a film would otherwise join the hand to the whole frame."""

MIN_HAND_AREA = 0.05
"""A hand covers at least this share of the frame (99 % of the RSNA hands cover 7 % or more,
a small child's on a large plate); smaller regions are markers, letters, details of a scene."""

MAX_HAND_AREA = 0.75
"""... and at most this share: a region covering more is the background or the field."""

FIELD_AREA = 0.2
"""A region at least this large (share of the frame) may be the exposed field or the
surround, with the hand as a notch in its outline: those notches are candidates too."""

MAX_HAND_SIDES = 2
"""A hand meets at most two sides of the frame (forearm at one, fingertips or thumb at
another); the background and a bright surround meet three or four."""

GAP_DEPTH = 0.12
"""A convexity defect of the region's outline is a gap between fingers when it is at least
this deep, relative to the square root of the region's convex hull area (finger gaps are
0.2-0.5 deep; ragged outlines and the notch at a wrist are shallower)."""

WEB_SPAN = 0.5
"""Gaps between fingers end at the finger webs, which lie side by side across the palm:
gaps count together when their deepest points are within this distance of each other
(same unit as :data:`GAP_DEPTH`). Notches scattered around a blob do not cluster."""

MAX_GAP_OPENING = 2.5
"""Finger gaps are narrow: the hull edge across a gap (fingertip to fingertip) is at most this
many times the gap's depth (median 0.9, 99 % under 1.7 on the accepted films); the notches of
photographs and bodies are mostly wide bays."""

MIN_GAPS = 3
"""A hand shows at least this many clustered finger gaps (four between five spread fingers;
fingers held together still leave two or three); photographs, bodies and slices rarely
show three deep notches side by side."""

MAX_SOLIDITY = 0.8
"""A hand fills at most this share of its convex hull (the gaps between the fingers are
outside it; 0.3-0.75 on the films measured); coins, bodies, slices and discs fill more."""

MIN_LOCAL_CONTRAST = 0.05
"""The hand's mean grey level differs from a 4 px ring around it by at least this share of
the stretched range (its sign says whether the film is inverted)."""

MIN_TEXTURE = 0.03
"""The hand's inside (2 px in from its outline) varies by at least this much (standard
deviation of the stretched film): bones over soft tissue do; a flat silhouette (a drawn
shape, a binary mask) does not."""

SMOOTH_LEVEL = 0.015
"""A background pixel is smooth when the film, blurred by 2 px, changes by less than this
per pixel there (the exposed plate and the collimator shadow; not photo texture)."""

MIN_BACKGROUND_SMOOTH = 0.5
"""At least this share of the frame away from the hand (over 3 px from it) is smooth: a
radiograph's background is air or the collimator's shadow, a photograph's is a scene."""

MAX_BACKGROUND_EDGES = 0.4
"""... and at most this share of it is on an edge (:data:`EDGE_LEVEL`): markers, plate edges
and film grain stay well below it; grass, gravel and crowds do not."""

# ----------------------------------------------------------------------------- result


@dataclass(frozen=True)
class FilmCheck:
    """The verdict on one film.

    ``accepted``: it looks like a hand radiograph (read it). ``inverted``: it looks like one
    with bone dark and background bright; read it after inverting (``1 - image``) and say so.
    ``reasons``: why it was refused, in words for the user (empty when accepted).
    ``failed``: the short codes of the checks it failed (``colour``, ``size``, ``blank``,
    ``noise``, ``smooth``, ``text``, ``no_hand``). ``scores``: every measured feature.
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

    0 for DICOM (its pixels are read as grey by :mod:`boneage.dicom`) and for grey PNG and
    JPEG files (from the header, nothing decoded). Other files are decoded reduced (1/4 a
    side, which libjpeg does almost for free) in colour. Call it after the film itself was
    decoded (:func:`boneage.decoding.read_film`), which has checked the size in the header:
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

    ``image``: the film as decoded, before :func:`boneage.imaging.prepare`: a 2-D grey
    array, uint8, uint16 or float (float in [0, 1] as :func:`boneage.decoding.read_film`
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

    small = _working_copy(image)
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
    hand, (blobs, lines) = _find_hand(level8, norm, edge, smooth)
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
    inverted = hand.best is not None and hand.best["local"] < 0
    accepted = not failed
    return _result(accepted, inverted and accepted, reasons, scores, failed)


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


def _working_copy(image: np.ndarray) -> np.ndarray:
    """float32 copy with a long side of :data:`WORK_SIDE` px, grey levels in [0, 1]."""
    height, width = image.shape
    step = max(1, min(height, width) // (4 * WORK_SIDE))
    if step > 1:  # a full-resolution film: every step-th pixel, then the area average
        image = image[::step, ::step]
        height, width = image.shape
    if image.dtype == np.uint8:
        scale = 1.0 / 255.0
    elif image.dtype == np.uint16:
        scale = 1.0 / 65535.0
    elif image.dtype == np.bool_:
        image, scale = image.astype(np.uint8), 1.0
    else:
        image = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            image = (image - low) / (high - low) if high > low else np.zeros_like(image)
        scale = 1.0
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        image = image.astype(np.float32)
    factor = WORK_SIDE / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    small = cv2.resize(np.ascontiguousarray(image), size, interpolation=interpolation)
    return small.astype(np.float32) * np.float32(scale)


@dataclass
class _Hand:
    best: dict | None
    scores: dict
    why: str


_K3 = np.ones((3, 3), np.uint8)
_K7 = np.ones((7, 7), np.uint8)
_RING = np.ones((9, 9), np.uint8)


def _otsu(pixels: np.ndarray) -> int | None:
    if pixels.size < 16 or pixels.min() == pixels.max():
        return None
    threshold, _ = cv2.threshold(pixels.reshape(1, -1), 0, 255,
                                 cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return int(threshold)


def _find_hand(level8: np.ndarray, norm: np.ndarray, edge: np.ndarray,
               smooth: np.ndarray) -> tuple[_Hand, tuple[int, int]]:
    """The most hand-like region, and the numbers of small blobs and of lines (text).

    Regions are the connected parts of each grey-level band that three thresholds cut out:
    Otsu's, and Otsu's again below and above it (a dark film region on a black surround, a
    bright surround outside the collimated field, a bright strip joined to the forearm each
    put the hand in a different band). Both sides of every threshold are looked at, so an
    inverted film's hand (the dark side) is found like any other.
    """
    height, width = level8.shape
    inner = level8[BORDER:height - BORDER, BORDER:width - BORDER]
    t0 = _otsu(inner.ravel())
    empty = {"gaps": 0.0, "hand_area": 0.0, "solidity": 0.0, "local_contrast": 0.0,
             "texture": 0.0, "background_smooth": 0.0, "background_edges": 1.0,
             "hand_sides": 0.0, "gap_opening": 0.0, "regions": 0.0}
    if t0 is None:
        return _Hand(None, empty, "the frame has a single grey level"), (0, 0)
    thresholds = sorted({t for t in (_otsu(inner[inner <= t0]), t0, _otsu(inner[inner > t0]))
                         if t is not None})
    masks = [level8 > t0, level8 <= t0]
    masks += [m for t in thresholds if t != t0 for m in (level8 > t, level8 <= t)]
    for a in range(len(thresholds)):
        for b in range(a + 1, len(thresholds)):
            masks.append((level8 > thresholds[a]) & (level8 <= thresholds[b]))

    frame = height * width
    blobs = lines = 0
    for mask in masks[:2]:  # marks on either side of Otsu's threshold: letters, lines of text
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
        w, h, area = (stats[1:, k] for k in (cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT,
                                             cv2.CC_STAT_AREA))
        blobs = max(blobs, int(((area >= BLOB_AREA[0] * frame)
                                & (area <= BLOB_AREA[1] * frame)).sum()))
        across = (h <= TEXT_LINE * height) & (w >= 3 * h) & (w >= 0.1 * width)
        lines = max(lines, int(across.sum()))

    edge_px = BORDER + 1
    regions = []

    def parts(mask: np.ndarray):
        """(component, area, sides of the frame met) of the parts of a mask of hand size or
        larger."""
        count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for i in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area < MIN_HAND_AREA * frame:
                continue
            sides = ((x <= edge_px) + (y <= edge_px) + (x + w >= width - edge_px)
                     + (y + h >= height - edge_px))
            yield (labels == i).astype(np.uint8), area, int(sides)

    def consider(component, area, sides):
        if area <= MAX_HAND_AREA * frame and sides <= MAX_HAND_SIDES:
            regions.append(_region(component, norm, edge, smooth, area, sides, frame))

    for mask in masks:
        mask = mask.astype(np.uint8)
        mask[:BORDER] = 0
        mask[-BORDER:] = 0
        mask[:, :BORDER] = 0
        mask[:, -BORDER:] = 0
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _K3)
        for component, area, sides in parts(mask):
            consider(component, area, sides)
            if area >= FIELD_AREA * frame:
                # A large region (the exposed field, or the surround): a hand that merges
                # with what lies beyond the field is the notch the field's outline makes.
                contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL,
                                               cv2.CHAIN_APPROX_SIMPLE)
                hull = np.zeros_like(component)
                cv2.fillPoly(hull, [cv2.convexHull(max(contours, key=len))], 1)
                notch = cv2.morphologyEx(hull & (1 - component), cv2.MORPH_OPEN, _K3)
                for part in parts(notch):
                    consider(*part)

    def rank(r):  # a tie goes to the usual polarity (bright hand): reading as-is is the default
        return (r["ok"], r["gaps"], r["local"] > 0, abs(r["local"]))

    best = max(regions, key=rank) if regions else None
    scores = dict(empty)
    scores["regions"] = float(len(regions))
    if best is not None:
        scores.update(gaps=float(best["gaps"]), hand_area=best["area"],
                      solidity=best["solidity"], local_contrast=best["local"],
                      texture=best["texture"], background_smooth=best["smooth"],
                      background_edges=best["edges"], hand_sides=float(best["sides"]),
                      gap_opening=best["gap_open"])
    if best is not None and best["ok"]:
        return _Hand(best, scores, ""), (blobs, lines)
    if best is None:
        why = (f"no single region of hand size ({MIN_HAND_AREA:.0%}-{MAX_HAND_AREA:.0%} of the "
               f"frame) that meets at most {MAX_HAND_SIDES} sides of the frame")
    else:
        missing = []
        if best["gaps"] < MIN_GAPS:
            missing.append(f"{best['gaps']} gap(s) between fingers side by side, a hand "
                           f"shows {MIN_GAPS}+")
        if best["solidity"] > MAX_SOLIDITY:
            missing.append(f"a compact outline (fills {best['solidity']:.0%} of its hull)")
        if abs(best["local"]) < MIN_LOCAL_CONTRAST:
            missing.append(f"contrast with its surroundings {abs(best['local']):.2f}")
        if best["texture"] < MIN_TEXTURE:
            missing.append(f"flat inside (texture {best['texture']:.3f}), no bones")
        if best["smooth"] < MIN_BACKGROUND_SMOOTH or best["edges"] > MAX_BACKGROUND_EDGES:
            missing.append(f"a busy background ({best['smooth']:.0%} smooth, "
                           f"{best['edges']:.0%} edges), not air")
        why = (f"the most hand-like region ({best['area']:.0%} of the frame) has "
               + ", ".join(missing) + "; another body part, a photograph or a crop?")
    return _Hand(None, scores, why), (blobs, lines)


def _region(component: np.ndarray, norm: np.ndarray, edge: np.ndarray, smooth: np.ndarray,
            area: int, sides: int, frame: int) -> dict:
    """The features of one candidate region (uint8 mask) and whether they make a hand."""
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    contour = max(contours, key=len)
    hull_area = max(cv2.contourArea(cv2.convexHull(contour)), 1.0)
    unit = float(np.sqrt(hull_area))
    gaps = 0
    gap_open = 9.0
    try:
        defects = cv2.convexityDefects(contour, cv2.convexHull(contour, returnPoints=False))
    except cv2.error:  # a self-touching outline: no reliable hull indices
        defects = None
    if defects is not None:
        defects = defects.reshape(-1, 4)
        deep = defects[defects[:, 3] >= GAP_DEPTH * 256.0 * unit]
        if len(deep):
            webs = contour.reshape(-1, 2)[deep[:, 2]].astype(np.float64)
            apart = np.hypot(*(webs[:, None, :] - webs[None, :, :]).transpose(2, 0, 1))
            points = contour.reshape(-1, 2).astype(np.float64)
            opening = np.hypot(*(points[deep[:, 0]] - points[deep[:, 1]]).T)
            narrow = opening <= MAX_GAP_OPENING * deep[:, 3] / 256.0
            together = (apart <= WEB_SPAN * unit) & narrow[None, :] & narrow[:, None]
            centre = int(together.sum(axis=1).argmax())
            gaps = int(together[centre].sum())
            gap_open = float(np.median(opening / (deep[:, 3] / 256.0)))
    inside = component.astype(bool)
    ring = (cv2.dilate(component, _RING) > 0) & ~inside
    level = float(norm[inside].mean())
    local = level - float(norm[ring].mean()) if ring.any() else 0.0
    core = cv2.erode(component, _K3, iterations=2).astype(bool)
    texture = float(norm[core].std()) if core.sum() > 16 else 0.0
    away = cv2.dilate(component, _K7) == 0
    background_smooth = float(smooth[away].mean()) if away.any() else 0.0
    background_edges = float(edge[away].mean()) if away.any() else 1.0
    solidity = area / hull_area
    ok = (gaps >= MIN_GAPS and solidity <= MAX_SOLIDITY and abs(local) >= MIN_LOCAL_CONTRAST
          and texture >= MIN_TEXTURE
          and background_smooth >= MIN_BACKGROUND_SMOOTH
          and background_edges <= MAX_BACKGROUND_EDGES)
    return {"ok": ok, "gaps": gaps, "local": local, "texture": texture,
            "smooth": background_smooth, "edges": background_edges,
            "area": area / frame, "solidity": solidity, "sides": int(sides),
            "gap_open": gap_open}


FORCE_HINT = "read it anyway with --force (web API: force=true)"


def check_read_film(film: Film, data: bytes, name: str = "image", *,
                    force: bool = False) -> Film:
    """The film check (:mod:`boneage.film_check`) on a decoded film, as predict and serve
    read a film: what does not look like a hand radiograph, or looks inverted (bone dark), is
    refused with the reason unless ``force``; ``film.meta["checks"]`` records the verdict for
    the reading's machine-readable ``checks`` field.

    An inverted-looking film is refused, not inverted back: a bright collimation border
    around a normal film can look like an inverted background, and reading a film the wrong
    way up gives a confident wrong age, so the user decides (invert the file, or force).
    """
    check = check_film(film.image, colour=colour_fraction(data))
    checks = {**check.to_dict(), "forced": False}
    problems = list(check.reasons) if not check.accepted else []
    if check.inverted:
        problems.append("it looks inverted (bone darker than the background); save it with "
                        "bone bright")
    if problems and not force:
        raise NotAFilmError(f"{name}: not read: " + "; ".join(problems) + f"; {FORCE_HINT}",
                            checks)
    checks["forced"] = bool(problems)
    return Film(film.pixels, {**film.meta, "checks": checks})
