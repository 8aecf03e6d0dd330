"""The film: a painted hand turned into a radiograph, and its canonical bone view.

:func:`render_film` draws a film's numbers, lays out and paints the hand through a random
framing (:func:`_film_affine`), then makes densities, exposes them on a film curve,
collimates whole plates, burns the "L" marker and applies the detector (blur, gamma, heel
effect, noise). :func:`bone_map` and :func:`wrist_box` give the noise-free bones in a
fixed, size-normalised frame, for tests and figures.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from boneage.data.phantom.anatomy import _ADULT_LEN_MM
from boneage.data.phantom.draws import _draw_biology, _draw_film, _neutral_pose
from boneage.data.phantom.layout import _Hand, _layout_hand
from boneage.data.phantom.maturation import hand_growth
from boneage.data.phantom.painting import (
    _AA,
    _BONE_VALUE,
    _ONE,
    _SHIFT,
    _Canvas,
    _paint_hand,
)


def _film_affine(hand: _Hand, height: int, width: int, *, cropped: bool,
                 placement: np.ndarray) -> np.ndarray:
    """(2, 3) affine from hand mm to film pixels (x right, y down).

    Cropped films are scaled to the hand's own extent (so size carries no age, like the
    full-resolution RSNA crops); whole-plate films use growth x magnification, with a
    magnification spread as wide as the growth effect, and the hand placed at random.
    ``placement``: the 6 uniforms of :class:`_FilmDraws`.
    """
    fill_u, magnification_u, rotation_u, x_u, y_u, _unused = placement
    angle = math.radians(30.0 * (rotation_u - 0.5))  # +-15 degrees
    # rotation, then flip y: the fingers (+y) point up the film (-rows)
    rotate_flip = np.array([[math.cos(angle), math.sin(angle)],
                            [math.sin(angle), -math.cos(angle)]])
    extent = hand.extent @ rotate_flip.T  # (n, 2) mm, film axes
    lo, hi = extent.min(0), extent.max(0)
    size = hi - lo  # (2,) mm
    if cropped:
        fill = 0.9 + 0.1 * fill_u
        scale = fill * min(height / size[1], 1.05 * width / size[0])  # px per mm
    else:
        scale = (0.62 * height / (_ADULT_LEN_MM * 0.8)
                 * math.exp(0.76 * (magnification_u - 0.5)))  # px per mm
        scale = min(scale, 0.98 * height / size[1], 1.0 * width / size[0])
    span = size * scale  # (2,) px
    free = np.array([width, height]) - span  # (2,) px left around the hand
    if cropped:
        offset = np.array([free[0] * (0.3 + 0.4 * x_u),
                           min(free[1], 0.0) * 0.5 + 0.02 * height * y_u])
    else:
        offset = np.array([free[0] * x_u if free[0] > 0 else free[0] / 2,
                           free[1] * (0.1 + 0.7 * y_u) if free[1] > 0 else free[1] / 2])
    translation = offset - lo * scale  # (2,) px
    return np.concatenate([rotate_flip * scale, translation[:, None]], 1)


def _densities(canvas: _Canvas, noise_rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    """Soft-tissue thickness and bone density maps, both (height, width) float32, ~0..1.

    Draws the trabecular texture from ``noise_rng``.
    """
    height, width = canvas.height, canvas.width
    tissue = canvas.tissue.astype(np.float32) * (1.0 / 255.0)
    # thickness ramps up inside the silhouette, whose edge stays fairly sharp
    tissue = (cv2.GaussianBlur(tissue, (0, 0), max(0.6, 2.2 * canvas.px_per_mm)) ** 0.6
              * cv2.GaussianBlur(tissue, (0, 0), 0.7))
    bone = canvas.bone_levels()
    # trabecular texture: low-resolution noise, upsampled, modulating the bone density
    texture = noise_rng.standard_normal((max(2, height // 4), max(2, width // 4)),
                                        dtype=np.float32)
    texture = cv2.resize(texture, (width, height), interpolation=cv2.INTER_LINEAR)
    bone *= (1.0 / _BONE_VALUE) * (1.0 + 0.07 * texture)
    return tissue, bone


def _expose(tissue: np.ndarray, bone: np.ndarray, exposure: np.ndarray,
            *, cropped: bool) -> tuple[np.ndarray, float]:
    """Film curve with random contrast, compression and background.

    Returns the (height, width) float64 image (grey levels, ~0..255) and its background
    level. ``exposure``: the 8 uniforms of :class:`_FilmDraws`.
    """
    tissue_k = 0.28 + 0.27 * exposure[0]  # attenuation of full tissue thickness
    bone_k = 0.32 + 0.4 * exposure[1]  # attenuation of bone density 1
    compression = 0.3 + 2.2 * exposure[2]
    full = tissue_k + 1.1 * bone_k  # attenuation mapped to the top of the span
    signal = np.exp(-compression * (tissue_k * tissue + bone_k * bone))
    signal = (1.0 - signal) * (1.0 / (1.0 - math.exp(-compression * full)))
    background = 2.0 + 22.0 * exposure[3] ** 2 if cropped else 15.0 + 140.0 * exposure[3]
    span = (252.0 - background) * (0.55 + 0.5 * exposure[4])  # grey levels
    return background + span * signal, background


def _collimate(image: np.ndarray, background: float, field: np.ndarray,
               plate: np.ndarray) -> np.ndarray:
    """Whole-plate films: a rotated collimated field, a bright or dark outside and maybe
    a bright plate edge. Returns a new image."""
    height, width = image.shape
    centre = (width / 2 + (field[3] - 0.5) * 0.15 * width,
              height / 2 + (field[4] - 0.5) * 0.12 * height)  # px
    size = (width * (0.8 + 0.3 * field[0]), height * (0.84 + 0.26 * field[1]))  # px
    angle = (field[2] - 0.5) * (40.0 if plate[1] < 0.25 else 10.0)  # degrees
    box = np.round(cv2.boxPoints((centre, size, angle)) * _ONE).astype(np.int32)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [box], 255, _AA, _SHIFT)
    inside = cv2.GaussianBlur(mask.astype(np.float32) * (1 / 255.0), (0, 0), 0.8)  # 0..1
    outside_level = 150.0 + 100.0 * field[5] if plate[2] < 0.6 else 5.0 + 40.0 * field[5]
    image = image * inside + (outside_level + 0.15 * (image - background)) * (1.0 - inside)
    if plate[0] < 0.6:  # bright plate edge
        edge = np.zeros((height, width), np.uint8)
        cv2.polylines(edge, [box], True, 255, max(1, round(height / 200)), _AA, _SHIFT)
        image = np.maximum(image, edge.astype(np.float32) * (0.6 + 0.4 * plate[3]))
    return image


def _burn_marker(image: np.ndarray, marker: np.ndarray) -> None:
    """Lead "L" marker, in place: a bright block with a dark letter, or a bright letter."""
    height, width = image.shape
    size = max(4, int(round(height * (0.035 + 0.035 * marker[1]))))  # px
    x = int(marker[2] * (width - 2 * size))  # px, top-left corner
    top_or_bottom = marker[3] * 0.35 if marker[4] < 0.7 else 0.6 + 0.35 * marker[3]
    y = int(top_or_bottom * (height - 2 * size))
    block = marker[5] < 0.5
    if block:
        patch = image[y:y + 2 * size, x:x + int(1.6 * size)]
        np.maximum(patch, 190.0 + 60.0 * marker[1], out=patch)
    level = 40.0 if block else 245.0
    stroke = max(1, size // 4)  # px
    x0, y0 = x + size // 3, y + size // 3
    foot = y0 + size + size // 2  # px, row of the letter's foot
    cv2.line(image, (x0, y0), (x0, foot), level, stroke)
    cv2.line(image, (x0, foot), (x0 + size - stroke, foot), level, stroke)


def _detect(image: np.ndarray, exposure: np.ndarray, detector: np.ndarray,
            noise_rng: np.random.Generator) -> np.ndarray:
    """Detector: blur, gamma, heel effect and signal-dependent noise; to uint8.

    Draws the noise from ``noise_rng``.
    """
    height, width = image.shape
    image = cv2.GaussianBlur(image, (0, 0), (0.35 + 0.75 * detector[0]) * height / 320.0 + 0.3)
    np.clip(image, 0.0, 255.0, out=image)
    image = 255.0 * (image * (1.0 / 255.0)) ** math.exp((exposure[5] - 0.5) * 0.8)
    if detector[2] < 0.5:  # heel effect: a vertical exposure ramp
        image += (np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
                  * (12.0 * (exposure[6] - 0.5)))
    amplitude = 1.0 + 7.0 * detector[1]  # grey levels
    noise = noise_rng.standard_normal((height, width), dtype=np.float32)
    image += noise * (amplitude * (0.3 + np.sqrt(np.maximum(image, 0.0) * (1.0 / 255.0))))
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def render_film(boneage_months: float, male: bool, rng: np.random.Generator,
                height: int = 320) -> np.ndarray:
    """One synthetic left-hand radiograph, uint8 ``(height, round(height*4/5))``.

    ``height`` px, at least 16. The draws come from ``rng`` in a fixed order and count,
    independent of the age and sex, so equal rng states give equal nuisances and biology.
    """
    h = int(height)
    if h < 16:
        raise ValueError(f"height must be >= 16, got {height}")
    w = int(round(h * 4 / 5))
    age = float(boneage_months)
    male = bool(male)

    draws = _draw_film(rng)
    hand = _layout_hand(age, male, draws.biology, draws.pose)
    canvas = _Canvas(h, w, _film_affine(hand, h, w, cropped=draws.cropped,
                                        placement=draws.placement))
    _paint_hand(canvas, hand)

    noise_rng = np.random.default_rng(draws.noise_seed)  # texture first, then noise
    tissue, bone = _densities(canvas, noise_rng)
    image, background = _expose(tissue, bone, draws.exposure, cropped=draws.cropped)
    if not draws.cropped:
        image = _collimate(image, background, draws.field, draws.plate)
    if draws.marker[0] < 0.6:
        _burn_marker(image, draws.marker)
    return _detect(image, draws.exposure, draws.detector, noise_rng)


# --------------------------------------------------------------------------------------
# Canonical view, for tests and figures
# --------------------------------------------------------------------------------------

_CANON_FILL = 0.9  # hand length / film height in the canonical view
_CANON_CENTRE = (12.0, 95.5)  # adult-layout mm put at the film centre
_WRIST_MM = ((-26.0, 34.0), (-14.0, 42.0))  # adult-layout box: (x0, x1), (y0, y1) mm


def _canonical_affine(height: int, width: int, growth: float) -> np.ndarray:
    """(2, 3) affine hand mm -> px: upright, scaled so the hand's length fills 90%."""
    scale = _CANON_FILL * height / (_ADULT_LEN_MM * growth)  # px per mm
    centre_x, centre_y = _CANON_CENTRE
    return np.array([[scale, 0.0, width / 2 - scale * centre_x * growth],
                     [0.0, -scale, height / 2 + scale * centre_y * growth]])


def bone_map(boneage_months: float, male: bool, rng: np.random.Generator,
             height: int = 320) -> np.ndarray:
    """Noise-free bone density (float32, film shape) of the hand, without nuisances.

    The hand is upright, in a neutral pose and scaled to its own length, so every
    landmark sits at the same pixel whatever the age: differences between two maps drawn
    from equal rng states are maturity alone. :func:`wrist_box` gives the carpal region.
    Only the biology is drawn from ``rng`` (the same first draws as :func:`render_film`).
    """
    h = int(height)
    w = int(round(h * 4 / 5))
    bio = _draw_biology(rng)
    hand = _layout_hand(float(boneage_months), bool(male), bio, _neutral_pose())
    canvas = _Canvas(h, w, _canonical_affine(h, w, hand_growth(boneage_months, male)))
    _paint_hand(canvas, hand)
    return canvas.bone_levels() * (1.0 / _BONE_VALUE)


def wrist_box(height: int = 320) -> tuple[slice, slice]:
    """(rows, cols) of the distal forearm and carpus in a :func:`bone_map`."""
    h = int(height)
    w = int(round(h * 4 / 5))
    mm_to_px = _canonical_affine(h, w, 1.0)
    (x0, x1), (y0, y1) = _WRIST_MM
    top_left = mm_to_px @ np.array([x0, y1, 1.0])  # (2,) px
    bottom_right = mm_to_px @ np.array([x1, y0, 1.0])  # (2,) px
    return (slice(max(0, int(top_left[1])), min(h, int(math.ceil(bottom_right[1])))),
            slice(max(0, int(top_left[0])), min(w, int(math.ceil(bottom_right[0])))))
