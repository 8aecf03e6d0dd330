"""The search for a hand in a film, for :func:`boneage.imaging.film_check.check_film` (issue 14).

It holds the working copy every check measures (:func:`working_copy`: the film shrunk to
:data:`WORK_SIDE` px, grey levels in [0, 1]), the hand search on it (:func:`find_hand`,
:func:`_region`) and the thresholds they use. :func:`find_hand` cuts the film into regions
with grey-level thresholds (Otsu, and Otsu again on each side of it, and the notches in the
outline of a large field) and keeps the most hand-like: of hand size, meeting at most two
sides of the frame, not filling its convex hull, differing from its surroundings, with
texture inside (bones), on a smooth background (air, not a scene), and with three or more
deep, narrow notches side by side: the gaps between the fingers (convexity defects of its
outline). On the way it counts small blobs and level lines (text), which the verdict uses.

The edge and smoothness masks it is given, their thresholds and the verdict itself are
:mod:`boneage.imaging.film_check`'s, which imports this module (never the other way round).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# ----------------------------------------------------------------------------- thresholds

WORK_SIDE = 128
"""Long side (px) of the working copy: fingers stay several pixels wide even on the 100 px
RSNA films, and every feature costs well under a millisecond at this size."""

BLOB_AREA = (0.0002, 0.01)
"""Size range of a blob counted by :data:`boneage.imaging.film_check.MAX_BLOBS`, as shares of the
frame."""

TEXT_LINE = 0.05
"""Largest thickness of a line of text (:data:`boneage.imaging.film_check.MIN_TEXT_LINES`), as a
share of the frame's side."""

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

MIN_BACKGROUND_SMOOTH = 0.5
"""At least this share of the frame away from the hand (over 3 px from it) is smooth: a
radiograph's background is air or the collimator's shadow, a photograph's is a scene."""

MAX_BACKGROUND_EDGES = 0.4
"""... and at most this share of it is on an edge (:data:`boneage.imaging.film_check.EDGE_LEVEL`):
markers, plate edges and film grain stay well below it; grass, gravel and crowds do not."""

# ----------------------------------------------------------------------------- the search


def working_copy(image: np.ndarray) -> np.ndarray:
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
class Hand:
    """What :func:`find_hand` found: the hand-like region's features (None when no region
    makes a hand), the scores for :class:`boneage.imaging.film_check.FilmCheck`, and why not."""

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


def find_hand(level8: np.ndarray, norm: np.ndarray, edge: np.ndarray,
              smooth: np.ndarray) -> tuple[Hand, tuple[int, int]]:
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
        return Hand(None, empty, "the frame has a single grey level"), (0, 0)
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
        return Hand(best, scores, ""), (blobs, lines)
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
    return Hand(None, scores, why), (blobs, lines)


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
            "gap_open": gap_open, "mask": component}
