"""Synthetic hand radiographs whose skeletal maturity follows bone age and sex.

This is the offline default data set: ``dvc repro`` and the tests train a CNN on it, so
the only reliable way to tell the age of a film must be its bones. Each film is drawn
with OpenCV in a hand coordinate frame (millimetres, wrist at the origin, fingers
towards +y, thumb towards +x: a left hand seen postero-anteriorly, as in RSNA):

* forearm (radius, ulna), eight carpal bones, five metacarpals, fourteen phalanges,
  the adductor sesamoid of the thumb, and a blurred soft-tissue silhouette;
* maturity follows :data:`TIMELINE` (Greulich & Pyle style appearance and fusion ages,
  girls on their own, earlier timeline): carpals appear as dots and grow into packed
  polygons, epiphyses appear, widen to the shaft, cap it and fuse (the growth-plate
  gap narrows, then leaves a fading scar), the hand grows and the bones thicken;
* every film gets biological jitter (timing of each structure, proportions) so the
  maturity is not a lookup table of the label;
* nuisances that must not carry age: magnification (as strong as growth itself, and
  "cropped" films are scaled to the hand whatever its size), rotation, translation,
  finger spread, exposure, gamma, background, plate borders, an "L" marker, noise, blur.

All randomness comes from the ``rng`` handed in, drawn in a fixed order and count
that does not depend on the age or sex, so two films rendered from equal rng states
share every nuisance and biological draw (cropped films are still framed to their own
hand). :func:`bone_map` renders the bones alone in a fixed, size-normalised frame, so
tests can see what maturity changes; :func:`structure_states` exposes the timeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

__all__ = [
    "SyntheticFilm",
    "Timing",
    "StructureState",
    "TIMELINE",
    "CARPALS",
    "EPIPHYSES",
    "structure_states",
    "hand_growth",
    "bone_map",
    "wrist_box",
    "render_film",
    "generate",
]


# --------------------------------------------------------------------------------------
# Maturation timeline
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """Ages in months at which a structure ossifies and (epiphyses only) fuses.

    ``*_f`` is the girls' timeline, ``*_m`` the boys'; ``fuse_*`` is ``None`` for
    bones that never fuse (carpals, sesamoid), whose ``mature_*`` age is when they reach
    their adult, tightly packed form instead.
    """

    appear_f: float
    appear_m: float
    fuse_f: float | None = None
    fuse_m: float | None = None
    mature_f: float = 168.0
    mature_m: float = 192.0

    def appear(self, male: bool) -> float:
        return self.appear_m if male else self.appear_f

    def fuse(self, male: bool) -> float | None:
        return self.fuse_m if male else self.fuse_f

    def mature(self, male: bool) -> float:
        return self.mature_m if male else self.mature_f


def _epi(appear_f: float, appear_m: float, fuse_f: float, fuse_m: float) -> Timing:
    return Timing(appear_f, appear_m, fuse_f, fuse_m, fuse_f, fuse_m)


# Distal phalanges fuse first, then proximal/middle phalanges and metacarpals, then the
# distal ulna and last the distal radius (shared/reference/hand-maturation.md).
_FUSE_DP = (162.0, 186.0)
_FUSE_PP = (174.0, 198.0)

#: Appearance/fusion ages (months) of every drawn structure, by sex.
TIMELINE: dict[str, Timing] = {
    # carpals, in order of appearance
    "capitate": Timing(1.0, 2.0),
    "hamate": Timing(2.0, 3.0),
    "triquetrum": Timing(24.0, 36.0),
    "lunate": Timing(36.0, 48.0),
    "trapezium": Timing(48.0, 66.0),
    "trapezoid": Timing(52.0, 70.0),
    "scaphoid": Timing(54.0, 68.0),
    "pisiform": Timing(108.0, 144.0),
    # adductor sesamoid of the thumb: a puberty sign
    "sesamoid": Timing(132.0, 156.0, mature_f=180.0, mature_m=204.0),
    # epiphyses: forearm
    "radius": _epi(10.0, 15.0, 198.0, 222.0),
    "ulna": _epi(72.0, 84.0, 192.0, 216.0),
    # epiphyses: metacarpals (base of the first, heads of the others)
    "mc1": _epi(18.0, 26.0, *_FUSE_PP),
    "mc2": _epi(13.0, 18.0, *_FUSE_PP),
    "mc3": _epi(14.0, 20.0, *_FUSE_PP),
    "mc4": _epi(15.0, 21.0, *_FUSE_PP),
    "mc5": _epi(16.0, 23.0, *_FUSE_PP),
    # epiphyses: phalanges (all at the base)
    "pp1": _epi(15.0, 20.0, *_FUSE_PP),
    "pp2": _epi(12.0, 16.0, *_FUSE_PP),
    "pp3": _epi(11.0, 15.0, *_FUSE_PP),
    "pp4": _epi(12.0, 16.0, *_FUSE_PP),
    "pp5": _epi(14.0, 19.0, *_FUSE_PP),
    "mp2": _epi(17.0, 24.0, *_FUSE_PP),
    "mp3": _epi(16.0, 22.0, *_FUSE_PP),
    "mp4": _epi(16.0, 22.0, *_FUSE_PP),
    "mp5": _epi(22.0, 34.0, *_FUSE_PP),
    "dp1": _epi(13.0, 18.0, *_FUSE_DP),
    "dp2": _epi(20.0, 28.0, *_FUSE_DP),
    "dp3": _epi(18.0, 26.0, *_FUSE_DP),
    "dp4": _epi(18.0, 26.0, *_FUSE_DP),
    "dp5": _epi(22.0, 32.0, *_FUSE_DP),
}

CARPALS = ("capitate", "hamate", "triquetrum", "lunate", "trapezium", "trapezoid", "scaphoid",
           "pisiform")
EPIPHYSES = tuple(k for k, t in TIMELINE.items() if t.fuse_f is not None)
_NAMES = tuple(TIMELINE)


@dataclass(frozen=True)
class StructureState:
    """Maturity of one structure at one bone age.

    ``stage`` runs 0 -> 1 from appearance to fusion (epiphyses) or to adult form (carpals,
    sesamoid); ``months_since_fusion`` is negative before fusion.
    """

    present: bool
    stage: float
    fused: bool
    months_since_fusion: float


def structure_states(
    boneage_months: float,
    male: bool,
    appear_shift: dict[str, float] | None = None,
    fuse_shift: dict[str, float] | None = None,
) -> dict[str, StructureState]:
    """Which structures are present/fused at ``boneage_months`` on the sex's timeline.

    ``appear_shift``/``fuse_shift`` (months, per structure name) are the per-film
    biological jitter; without them this is the plain reference table.
    """
    out: dict[str, StructureState] = {}
    a = float(boneage_months)
    for name, t in TIMELINE.items():
        da = appear_shift.get(name, 0.0) if appear_shift else 0.0
        df = fuse_shift.get(name, 0.0) if fuse_shift else 0.0
        t0 = t.appear(male) + da
        fuse = t.fuse(male)
        if fuse is None:
            t1 = t.mature(male) + da + df
            fused, since = False, -1.0
        else:
            t1 = fuse + da + df
            fused, since = a >= t1, a - t1
        t1 = max(t1, t0 + 12.0)
        stage = min(max((a - t0) / (t1 - t0), 0.0), 1.0)
        out[name] = StructureState(a >= t0, stage, fused, since)
    return out


def hand_growth(boneage_months: float, male: bool) -> float:
    """Hand length relative to an adult male hand: about doubles from 1 to 15 years."""
    a = float(boneage_months) * (1.0 if male else 1.1)
    adult = 1.0 if male else 0.93
    return adult * (1.0 - 0.6 * math.exp(-a / 80.0))


# --------------------------------------------------------------------------------------
# Adult hand layout (mm, hand frame: wrist origin, +y to the fingers, +x to the thumb)
# --------------------------------------------------------------------------------------

# ray: (base x, base y, metacarpal angle deg (+ = towards the thumb), finger abduction deg,
#       bone lengths (mc, pp, mp, dp; mp 0 for the thumb), width factor)
_RAYS = {
    1: (25.0, 26.0, 36.0, 6.0, (44.0, 31.0, 0.0, 23.0), 1.12),
    2: (12.5, 40.0, 10.0, 5.0, (67.0, 40.0, 23.0, 17.0), 1.0),
    3: (2.0, 41.0, 0.0, 0.0, (64.0, 45.0, 28.0, 19.0), 1.02),
    4: (-8.5, 39.0, -9.0, -5.0, (57.0, 42.0, 27.0, 18.0), 0.95),
    5: (-18.0, 35.0, -19.0, -9.0, (51.0, 33.0, 19.0, 16.0), 0.85),
}
# bone kind -> (proximal end width, waist, distal end width, profile power,
#               distal cap as a fraction of the distal width)
_BONE_W = {
    "mc": (11.5, 8.6, 11.5, 3.0, 0.12),
    "mc1": (13.0, 9.8, 12.6, 3.0, 0.35),
    "pp": (12.6, 8.3, 10.6, 3.0, 0.3),
    "mp": (10.6, 7.2, 9.0, 3.0, 0.3),
    "dp": (9.5, 4.1, 6.0, 3.0, 0.45),
}
# carpal: (cx, cy, rx, ry, rotation deg, squareness of the adult form, density)
_CARPAL_GEOM = {
    "scaphoid": (15.5, 10.5, 11.5, 6.3, 55.0, 2.6, 0.95),
    "lunate": (2.0, 9.0, 7.8, 7.2, 0.0, 3.0, 0.95),
    "triquetrum": (-11.0, 14.0, 6.8, 5.6, -30.0, 3.0, 0.9),
    "pisiform": (-14.0, 11.0, 4.6, 4.4, 0.0, 2.2, 0.4),
    "trapezium": (23.5, 25.5, 8.0, 7.2, 35.0, 3.2, 0.95),
    "trapezoid": (13.5, 29.0, 5.6, 6.8, 10.0, 3.4, 0.95),
    "capitate": (2.5, 26.5, 7.0, 11.5, 0.0, 3.0, 1.0),
    "hamate": (-9.5, 26.0, 7.2, 10.0, -12.0, 3.0, 0.95),
}
# which of the three bone layers a carpal goes to: neighbours on different layers add up
# where they overlap, like the packed adult carpus does on a real film
_CARPAL_LAYER = {"scaphoid": 0, "lunate": 1, "triquetrum": 0, "pisiform": 2, "trapezium": 1,
                 "trapezoid": 0, "capitate": 1, "hamate": 0}

_N_RAY = 5
_N_CARPAL = len(_CARPAL_GEOM)
_SHIFT = 4  # fractional bits handed to cv2 drawing calls
_ONE = float(1 << _SHIFT)
_AA = cv2.LINE_AA


def _rot(deg: float) -> np.ndarray:
    r = math.radians(deg)
    return np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])


def _superellipse(rx: float, ry: float, p: float, n: int = 20) -> np.ndarray:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    e = 2.0 / p
    return np.stack([rx * np.sign(c) * np.abs(c) ** e, ry * np.sign(s) * np.abs(s) ** e], 1)


def _long_bone(length: float, w0: float, wm: float, w1: float, power: float,
               cap0: float, cap1: float, n: int = 9) -> np.ndarray:
    """Outline of a tubular bone in local (along, across) coordinates.

    Width flares from the waist ``wm`` to ``w0``/``w1`` at the ends (metaphyses, heads),
    ends are half-ellipses bulging by ``cap0``/``cap1`` (negative: concave).
    """
    s = np.linspace(0.0, 1.0, n)
    w = wm + (w0 - wm) * (1.0 - s) ** power + (w1 - wm) * s**power
    a0, a1 = max(cap0, 0.0), length - max(cap1, 0.0)  # bulging ends stay within length
    a = a0 + s * (a1 - a0)
    t = np.linspace(np.pi / 2, -np.pi / 2, 7)[1:-1]
    right = np.stack([a, w / 2], 1)
    cap_d = np.stack([a1 + cap1 * np.cos(t), w1 / 2 * np.sin(t)], 1)
    left = np.stack([a[::-1], -w[::-1] / 2], 1)
    cap_p = np.stack([a0 - cap0 * np.cos(t), -w0 / 2 * np.sin(t)], 1)
    return np.concatenate([right, cap_d, left, cap_p])


class _Canvas:
    """Bone layers, their medulla layers and a soft-tissue layer, drawn in hand frame mm.

    cv2 anti-aliasing only works on 8-bit images, so every layer is uint8 and shapes on
    one layer overwrite (union) each other; the density map is formed from the layers
    afterwards. Three bone layers let neighbouring bones overlap additively.
    """

    def __init__(self, h: int, w: int, affine: np.ndarray):
        self.h, self.w = h, w
        self.m = affine  # 2x3, hand mm -> pixels
        self.px_per_mm = float(math.sqrt(abs(np.linalg.det(affine[:, :2]))))
        self.outer = [np.zeros((h, w), np.uint8) for _ in range(3)]
        self.inner = [np.zeros((h, w), np.uint8) for _ in range(3)]
        self.tissue = np.zeros((h, w), np.uint8)

    def _px(self, pts: np.ndarray) -> np.ndarray:
        p = pts @ self.m[:, :2].T + self.m[:, 2]
        return np.round(p * _ONE).astype(np.int32)

    def poly(self, img: np.ndarray, pts: np.ndarray, value: float) -> None:
        cv2.fillPoly(img, [self._px(pts)], float(value), _AA, _SHIFT)

    def line(self, img: np.ndarray, pts: np.ndarray, value: float, width_mm: float) -> None:
        p = self._px(pts)
        th = max(1, int(round(width_mm * self.px_per_mm)))
        cv2.polylines(img, [p], False, float(value), th, _AA, _SHIFT)

    def bone(self, layer: int, local: np.ndarray, origin: np.ndarray, u: np.ndarray,
             value: float, inner_local: np.ndarray | None = None, inner_value: float = 0.0):
        """Draw a shape given in (along, across) coordinates of the axis ``u``."""
        n = np.array([u[1], -u[0]])
        world = origin + local[:, :1] * u + local[:, 1:] * n
        self.poly(self.outer[layer], world, value)
        if inner_local is not None and inner_value > 0:
            wi = origin + inner_local[:, :1] * u + inner_local[:, 1:] * n
            self.poly(self.inner[layer], wi, inner_value)


# --------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------

_BONE_VALUE = 200.0  # uint8 level of density 1.0 on the bone layers
_MEDULLA = 0.2  # density lost in the medullary canal: the cortex looks brighter


@dataclass
class _Bio:
    """Per-film biological jitter, drawn in a fixed order."""

    appear: dict[str, float]
    fuse: dict[str, float]
    ray_len: np.ndarray      # (5,)
    ray_w: np.ndarray        # (5,)
    carpal_xy: np.ndarray    # (8, 2) mm
    carpal_size: np.ndarray  # (8,)
    slender: float           # bone width / length ratio factor
    tissue_w: float          # soft tissue thickness factor
    ulna_variance: float     # mm, distal ulna relative to radius
    common: float            # months, shift of the whole film's maturity (reader noise)


def _draw_bio(rng: np.random.Generator) -> _Bio:
    z = rng.standard_normal(len(_NAMES))
    zf = rng.standard_normal(len(_NAMES))
    appear, fuse = {}, {}
    for k, name in enumerate(_NAMES):
        t = TIMELINE[name]
        sd = min(1.0 + 0.05 * 0.5 * (t.appear_f + t.appear_m), 6.0)
        appear[name] = float(np.clip(z[k], -2.5, 2.5) * sd)
        fuse[name] = float(np.clip(zf[k], -2.5, 2.5) * 4.0)
    return _Bio(
        appear=appear,
        fuse=fuse,
        ray_len=1.0 + 0.03 * np.clip(rng.standard_normal(_N_RAY), -2.5, 2.5),
        ray_w=1.0 + 0.05 * np.clip(rng.standard_normal(_N_RAY), -2.5, 2.5),
        carpal_xy=0.6 * np.clip(rng.standard_normal((_N_CARPAL, 2)), -2.5, 2.5),
        carpal_size=1.0 + 0.06 * np.clip(rng.standard_normal(_N_CARPAL), -2.5, 2.5),
        slender=float(1.0 + 0.06 * np.clip(rng.standard_normal(), -2.5, 2.5)),
        tissue_w=float(rng.uniform(0.92, 1.2)),
        ulna_variance=float(rng.normal(-2.0, 1.5)),
        common=float(np.clip(rng.normal(0.0, 3.0), -8.0, 8.0)),
    )


@dataclass
class _Pose:
    """Nuisance posture: finger spread and small joint angles (degrees)."""

    spread: float
    finger: np.ndarray  # (5,)
    thumb: float
    flex: np.ndarray    # (5, 3)


def _draw_pose(rng: np.random.Generator) -> _Pose:
    return _Pose(float(rng.uniform(0.2, 1.4)), rng.normal(0.0, 3.0, _N_RAY),
                 float(rng.normal(0.0, 7.0)), rng.normal(0.0, 2.5, (_N_RAY, 3)))


@dataclass
class _LongBone:
    """A tubular bone from ``origin`` along unit ``u``, epiphysis at ``epi_end``."""

    layer: int
    origin: np.ndarray
    u: np.ndarray
    length: float
    widths: tuple[float, float, float]  # proximal end, waist, distal end (mm)
    power: float                        # how sharply the ends flare
    epi_end: str | None                 # "prox", "dist" or None
    state: StructureState | None
    density: float
    cortex: float                       # cortex thickness / width
    gap: float                          # open growth plate (mm)
    cap_free: float                     # bulge of the end without epiphysis / its width
    epi_thick: float = 0.36             # adult epiphysis thickness / metaphysis width
    epi_p: float = 2.8                  # squareness of the mature epiphysis
    epi_w: float = 1.04                 # mature epiphysis width / metaphysis width
    tilt: float = 0.0                   # slant of the distal end (radius)


@dataclass
class _Blob:
    """A carpal bone or the sesamoid: outline (and medulla) in hand mm."""

    layer: int
    outline: np.ndarray
    inner: np.ndarray | None
    density: float


@dataclass
class _Hand:
    bones: list[_LongBone]
    blobs: list[_Blob]
    fingers: list[tuple[np.ndarray, float]]  # soft-tissue centre lines and widths (mm)
    palm: np.ndarray
    arm: np.ndarray
    extent: np.ndarray  # points (mm) the framing must show: tips, palm edge, wrist


def _unit(deg: float) -> np.ndarray:
    r = math.radians(deg)
    return np.array([math.sin(r), math.cos(r)])


def _normal(u: np.ndarray) -> np.ndarray:
    """Unit normal of axis ``u`` pointing to the thumb side when ``u`` points up."""
    return np.array([u[1], -u[0]])


def _epiphysis_shape(width: float, thick: float, stage: float, p: float) -> np.ndarray:
    """Epiphysis outline in local coords, +along towards the joint, origin at its face
    towards the metaphysis. It starts as a round dot, flattens into a disc as wide as the
    metaphysis, then "caps" it: its rim bends over the metaphysis corners."""
    pts = _superellipse(width / 2, thick / 2, 2.0 + (p - 2.0) * min(1.0, stage * 1.6), 22)
    pts = pts[:, ::-1].copy()  # (along, across)
    pts[:, 0] += thick / 2
    cap = max(0.0, (stage - 0.62) / 0.38)
    if cap > 0:
        edge = np.clip(np.abs(pts[:, 1]) / (width / 2), 0, 1) ** 6
        low = pts[:, 0] < thick / 2
        pts[low, 0] -= cap * 0.45 * thick * edge[low]
    return pts


def _paint_long_bone(cv: _Canvas, b: _LongBone) -> None:
    """Shaft (cortex + medulla) and, once ossified, the epiphysis and growth plate.

    The epiphyseal zone (cartilage in the young) is reserved whatever the maturity; the
    ossified epiphysis sits in it, separated by the growth plate, which narrows before
    fusion and then leaves a dense scar line that fades over about two years.
    """
    w0, wm, w1 = b.widths
    prox = b.epi_end == "prox"
    wmeta = w0 if prox else w1
    zone = b.epi_thick * wmeta + b.gap if b.epi_end else 0.0
    shaft_len = b.length - zone
    shaft_org = b.origin + b.u * zone if prox else b.origin
    cap_meta = -0.04 * wmeta
    if b.epi_end is None:
        cap0, cap1 = 0.12 * w0, b.cap_free * w1
    elif prox:
        cap0, cap1 = cap_meta, b.cap_free * w1
    else:
        cap0, cap1 = 0.12 * w0, cap_meta
    local = _long_bone(shaft_len, w0, wm, w1, b.power, cap0, cap1)
    if b.tilt:
        # the distal radius slants: its styloid (thumb side) reaches further
        ramp = np.clip(local[:, 0] / shaft_len, 0, 1) ** 8
        local[:, 0] += b.tilt * local[:, 1] * ramp
    k = 1.0 - 2.0 * b.cortex
    inner = _long_bone(shaft_len * 0.8, w0 * k * 0.9, wm * k, w1 * k * 0.9, b.power, 0.0, 0.0, 7)
    inner[:, 0] += shaft_len * 0.1
    value = _BONE_VALUE * b.density
    cv.bone(b.layer, local, shaft_org, b.u, value, inner, value * _MEDULLA)

    st = b.state
    if b.epi_end is None or st is None or not st.present:
        return
    s = st.stage
    grow = min(1.0, s / 0.6)
    ew = wmeta * (0.2 + (b.epi_w - 0.2) * grow**0.8)
    et = min(ew, b.epi_thick * wmeta * (0.35 + 0.65 * grow))
    if st.fused:
        gap = -0.1 * b.gap
    elif s > 0.8:
        gap = b.gap * (1.0 - s) / 0.2
    else:  # a small centre floats in the middle of its cartilage
        gap = b.gap + (1.0 - min(1.0, s / 0.5)) * 0.5 * max(0.0, zone - et - b.gap)
    shape = _epiphysis_shape(ew, et, s, b.epi_p)
    if prox:
        face, sgn = shaft_org - b.u * gap, -1.0
    else:
        face, sgn = shaft_org + b.u * (shaft_len + gap), 1.0
    shape[:, 0] *= sgn
    if b.tilt:
        shape[:, 0] += b.tilt * shape[:, 1] * (1.0 + 0.8 * shape[:, 1] / max(ew, 1e-3))
    inner = np.stack([shape[:, 0] * 0.6 + sgn * et * 0.2, shape[:, 1] * 0.72], 1)
    cv.bone(b.layer, shape, face, b.u, value * 0.92, inner, value * 0.8 * _MEDULLA)
    if st.fused and st.months_since_fusion < 36:
        # physeal scar: a thin dense line where the plate was (lift the medulla there)
        fade = math.exp(-st.months_since_fusion / 14.0)
        n = _normal(b.u)
        half = 0.42 * wmeta
        scar = np.stack([face - n * half, face + n * half])
        cv.line(cv.inner[b.layer], scar, value * _MEDULLA * (1.0 - 0.9 * fade), 0.5)


def _layout_hand(age: float, male: bool, bio: _Bio, pose: _Pose) -> _Hand:
    """Every structure of the hand in mm for this bone age, sex, biology and pose."""
    st = structure_states(age + bio.common, male, bio.appear, bio.fuse)
    g = hand_growth(age, male)
    mat = min(1.0, max(0.0, age * (1.0 if male else 1.1) / 200.0))  # girls ahead
    wg = g * bio.slender * (0.86 + 0.14 * mat)  # bones thicken more than they lengthen
    cortex = 0.2 + 0.1 * mat
    dens = 0.78 + 0.22 * mat
    gap = 1.1 * g
    joint = (1.8 + 2.4 * (1.0 - mat)) * g  # cartilage-rich joints of the young look wide
    bones: list[_LongBone] = []
    blobs: list[_Blob] = []

    # forearm: both shafts run out of the film
    fl = 140.0 * g + 60.0
    up = np.array([0.0, 1.0])
    bones.append(_LongBone(0, np.array([12.0 * g, -fl]), up, fl, (16 * wg, 15 * wg, 29 * wg), 7.0,
                           "dist", st["radius"], 1.1 * dens, 0.34, gap, 0.14,
                           epi_thick=0.32, epi_p=2.6, epi_w=1.0, tilt=0.22))
    bones.append(_LongBone(1, np.array([-12.0 * g, -fl]), up, fl + (bio.ulna_variance - 1.0) * g,
                           (12 * wg, 10.5 * wg, 15.5 * wg), 7.0, "dist", st["ulna"], 1.05 * dens,
                           0.5, gap, 0.0, epi_thick=0.5, epi_p=2.2, epi_w=0.95))

    # carpals: dots that grow into packed polygons
    for k, (name, (cx, cy, rx, ry, rot, sq, d)) in enumerate(_CARPAL_GEOM.items()):
        s = st[name]
        if not s.present:
            continue
        size = g * bio.carpal_size[k] * (0.14 + 0.86 * s.stage**0.75)
        shape = _superellipse(rx * size, ry * size, 2.0 + (sq - 2.0) * s.stage, 20)
        ny = shape[:, 1] / max(ry * size, 1e-3)
        if name == "hamate":  # wedge: narrower distally
            shape[:, 0] *= 1.0 - 0.25 * s.stage * ny
        elif name == "capitate":  # waist below a rounded head
            shape[:, 0] *= 1.0 - 0.12 * s.stage * np.exp(-(ny**2) * 6)
        shape = shape @ _rot(rot).T
        c = (np.array([cx, cy]) + bio.carpal_xy[k]) * g
        blobs.append(_Blob(_CARPAL_LAYER[name], shape + c, shape * 0.7 + c, d * dens))

    # rays: metacarpal + phalanges; the thumb has no middle phalanx
    fingers: list[tuple[np.ndarray, float]] = []
    heads: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    tips = []
    for r in range(1, 6):
        bx, by, mc_deg, abd, lens, wf = _RAYS[r]
        lens = [x * g * bio.ray_len[r - 1] for x in lens]
        wfr = wf * bio.ray_w[r - 1] * wg
        if r == 1:
            ang = mc_deg + pose.thumb
        else:
            ang = mc_deg * (0.85 + 0.15 * pose.spread) + pose.finger[r - 1] * 0.3
        base = np.array([bx, by]) * g
        u = _unit(ang)
        layer = 1 if r % 2 else 0
        kind = "mc1" if r == 1 else "mc"
        w = _BONE_W[kind]
        widths = (w[0] * wfr, w[1] * wfr, w[2] * wfr)
        if r == 1:  # the thumb metacarpal has its epiphysis at the base
            bones.append(_LongBone(layer, base, u, lens[0], widths, w[3], "prox", st["mc1"], dens,
                                   cortex, gap, w[4]))
        else:  # the others at the head: a big round epiphysis
            bones.append(_LongBone(layer, base, u, lens[0], widths, w[3], "dist", st[f"mc{r}"],
                                   dens, cortex, gap, w[4], epi_thick=0.75, epi_p=2.1, epi_w=1.12))
        head = base + u * lens[0]
        heads[r] = (head, u)
        p = head + u * joint
        ang_f = ang + (abd * pose.spread if r > 1 else 0.0) + pose.finger[r - 1]
        kinds = ("pp", "mp", "dp") if r > 1 else ("pp", "dp")
        blens = (lens[1], lens[2], lens[3]) if r > 1 else (lens[1], lens[3])
        start = p.copy()
        for j, (kind, length) in enumerate(zip(kinds, blens)):
            ang_f += pose.flex[r - 1, j]
            u2 = _unit(ang_f)
            w = _BONE_W[kind]
            wk = wfr * (1.1 if r == 1 else 1.0)
            bones.append(_LongBone(layer, p.copy(), u2, length, (w[0] * wk, w[1] * wk, w[2] * wk),
                                   w[3], "prox", st[f"{kind}{r}"],
                                   dens * (0.9 if kind == "dp" else 0.97), cortex, gap, w[4]))
            p = p + u2 * (length + joint)
        tip = p + _unit(ang_f) * (1.5 * g)
        fw = (2.0 * _BONE_W["pp"][1] * wfr + 2.5 * g) * bio.tissue_w
        uf = _unit(ang_f)
        tips += [tip + uf * fw * 0.5, tip + _normal(uf) * fw * 0.5, tip - _normal(uf) * fw * 0.5]
        if r == 1:
            fingers.append((np.stack([base + u * lens[0] * 0.45, head, start, tip]), fw * 1.08))
        else:
            fingers.append((np.stack([head, start, tip]), fw))

    # adductor sesamoid: ulnar side of the thumb metacarpal head, superimposed on it
    ses = st["sesamoid"]
    if ses.present:
        head, u = heads[1]
        rad = g * (0.6 + 2.4 * ses.stage**0.7)
        c = head - u * (1.5 * g) - _normal(u) * (3.2 * g)
        blobs.append(_Blob(2, _superellipse(rad, rad * 0.9, 2.0, 14) + c, None, 0.8 * dens))

    # soft tissue: palm polygon around the metacarpals and thenar web, forearm below
    tw = bio.tissue_w
    h1, u1 = heads[1]
    h2, u2 = heads[2]
    h5, u5 = heads[5]
    n1, n2, n5 = _normal(u1), _normal(u2), _normal(u5)
    web = [heads[r][0] + heads[r][1] * (0.3 * _RAYS[r][4][1] * g) for r in (5, 4, 3, 2)]
    palm = np.stack([
        np.array([-27.0 * tw, 10.0]) * g,
        np.array([-29.0 * tw, 40.0]) * g,
        h5 - n5 * (8.0 * g * tw) - u5 * (6.0 * g),
        web[0] - n5 * (5.0 * g * tw),
        *web,
        h2 + u2 * (2.0 * g) + n2 * (6.0 * g * tw),
        h1 - u1 * (4.0 * g) - n1 * (7.0 * g * tw),
        h1 + n1 * (8.0 * g * tw),
        h1 - u1 * (30.0 * g) + n1 * (9.0 * g * tw),
        np.array([30.0 * tw, 15.0]) * g,
        np.array([28.0 * tw, 0.0]) * g,
    ])
    half = 27.0 * g * tw
    arm = np.array([[-half, 12.0 * g], [-half * 0.95, -fl - 80.0],
                    [half * 0.95, -fl - 80.0], [half * 1.05, 12.0 * g]])
    wrist = np.array([[-half, -30.0 * g], [half, -30.0 * g]])
    extent = np.concatenate([np.stack(tips), palm, wrist])
    return _Hand(bones, blobs, fingers, palm, arm, extent)


def _paint_hand(cv: _Canvas, hand: _Hand) -> None:
    # soft tissue: thicker parts drawn brighter (fingers < palm < forearm)
    for pts, fw in hand.fingers:
        cv.line(cv.tissue, pts, 190, fw)
    cv.poly(cv.tissue, hand.palm, 235)
    cv.poly(cv.tissue, hand.arm, 240)
    for b in hand.bones:
        _paint_long_bone(cv, b)
    for blob in hand.blobs:
        cv.poly(cv.outer[blob.layer], blob.outline, _BONE_VALUE * blob.density)
        if blob.inner is not None:
            cv.poly(cv.inner[blob.layer], blob.inner, _BONE_VALUE * blob.density * 0.8 * _MEDULLA)


# --------------------------------------------------------------------------------------
# Film: projection, exposure, plate, marker, noise
# --------------------------------------------------------------------------------------

_ADULT_LEN_MM = 215.0  # distal radius metaphysis to middle fingertip, adult male layout


def _frame(hand: _Hand, h: int, w: int, cropped: bool, u: np.ndarray) -> np.ndarray:
    """Affine (2x3) from hand mm to pixels.

    Cropped films are scaled to the hand's own extent (so size carries no age, like the
    full-resolution RSNA crops); whole-plate films use growth x magnification, with a
    magnification spread as wide as the growth effect, and the hand placed at random.
    ``u``: 6 uniforms (fill, magnification, rotation, x, y, spare).
    """
    rot = math.radians(30.0 * (u[2] - 0.5))
    a = np.array([[math.cos(rot), math.sin(rot)], [math.sin(rot), -math.cos(rot)]])
    pts = hand.extent @ a.T
    lo, hi = pts.min(0), pts.max(0)
    size = hi - lo
    if cropped:
        fill = 0.9 + 0.1 * u[0]
        s = fill * min(h / size[1], 1.05 * w / size[0])
    else:
        s = 0.62 * h / (_ADULT_LEN_MM * 0.8) * math.exp(0.76 * (u[1] - 0.5))
        s = min(s, 0.98 * h / size[1], 1.0 * w / size[0])
    span = size * s
    free = np.array([w, h]) - span
    if cropped:
        off = np.array([free[0] * (0.3 + 0.4 * u[3]), min(free[1], 0.0) * 0.5 + 0.02 * h * u[4]])
    else:
        off = np.array([free[0] * u[3] if free[0] > 0 else free[0] / 2,
                        free[1] * (0.1 + 0.7 * u[4]) if free[1] > 0 else free[1] / 2])
    t = off - lo * s
    return np.concatenate([a * s, t[:, None]], 1)


def render_film(boneage_months: float, male: bool, rng: np.random.Generator,
                height: int = 320) -> np.ndarray:
    """One synthetic left-hand radiograph, uint8 ``(height, round(height*4/5))``.

    The nuisance draws come from ``rng`` in a fixed order and count, independent of the
    age and sex, so equal rng states give equal nuisances.
    """
    h = int(height)
    if h < 16:
        raise ValueError(f"height must be >= 16, got {height}")
    w = int(round(h * 4 / 5))
    age = float(boneage_months)
    male = bool(male)

    # -- every draw, in a fixed order ------------------------------------------------------
    bio = _draw_bio(rng)
    pose = _draw_pose(rng)
    cropped = bool(rng.random() < 0.4)
    place = rng.random(6)
    plate = rng.random(6)
    field = rng.random(6)
    marker = rng.random(6)
    expo = rng.random(8)
    noise_u = rng.random(3)
    noise_seed = int(rng.integers(0, 2**31 - 1))

    hand = _layout_hand(age, male, bio, pose)
    cv = _Canvas(h, w, _frame(hand, h, w, cropped, place))
    _paint_hand(cv, hand)

    # -- densities --------------------------------------------------------------------------
    tissue = cv.tissue.astype(np.float32) * (1.0 / 255.0)
    # thickness ramps up inside the silhouette, whose edge stays fairly sharp
    tissue = (cv2.GaussianBlur(tissue, (0, 0), max(0.6, 2.2 * cv.px_per_mm)) ** 0.6
              * cv2.GaussianBlur(tissue, (0, 0), 0.7))
    bone = np.zeros((h, w), np.float32)
    for o, i in zip(cv.outer, cv.inner):
        bone += cv2.subtract(o, i).astype(np.float32)
    # trabecular texture: low-resolution noise, upsampled, modulating the bone density
    nrng = np.random.default_rng(noise_seed)
    tex = nrng.standard_normal((max(2, h // 4), max(2, w // 4)), dtype=np.float32)
    tex = cv2.resize(tex, (w, h), interpolation=cv2.INTER_LINEAR)
    bone *= (1.0 / _BONE_VALUE) * (1.0 + 0.07 * tex)

    # -- exposure: film curve with random contrast, compression and background -------------
    k_t = 0.28 + 0.27 * expo[0]
    k_b = 0.32 + 0.4 * expo[1]
    comp = 0.3 + 2.2 * expo[2]
    smax = k_t + 1.1 * k_b
    sig = np.exp(-comp * (k_t * tissue + k_b * bone))
    sig = (1.0 - sig) * (1.0 / (1.0 - math.exp(-comp * smax)))
    bg = 2.0 + 22.0 * expo[3] ** 2 if cropped else 15.0 + 140.0 * expo[3]
    span = (252.0 - bg) * (0.55 + 0.5 * expo[4])
    img = bg + span * sig

    # -- plate / collimated field ------------------------------------------------------------
    if not cropped:
        fc = (w / 2 + (field[3] - 0.5) * 0.15 * w, h / 2 + (field[4] - 0.5) * 0.12 * h)
        fsize = (w * (0.8 + 0.3 * field[0]), h * (0.84 + 0.26 * field[1]))
        frot = (field[2] - 0.5) * (40.0 if plate[1] < 0.25 else 10.0)
        box = np.round(cv2.boxPoints((fc, fsize, frot)) * _ONE).astype(np.int32)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [box], 255, _AA, _SHIFT)
        mk = cv2.GaussianBlur(mask.astype(np.float32) * (1 / 255.0), (0, 0), 0.8)
        out_level = 150.0 + 100.0 * field[5] if plate[2] < 0.6 else 5.0 + 40.0 * field[5]
        img = img * mk + (out_level + 0.15 * (img - bg)) * (1.0 - mk)
        if plate[0] < 0.6:  # bright plate edge
            edge = np.zeros((h, w), np.uint8)
            cv2.polylines(edge, [box], True, 255, max(1, round(h / 200)), _AA, _SHIFT)
            img = np.maximum(img, edge.astype(np.float32) * (0.6 + 0.4 * plate[3]))

    # -- lead "L" marker: a bright block with a dark letter, or a bright letter ---------------
    if marker[0] < 0.6:
        ms = max(4, int(round(h * (0.035 + 0.035 * marker[1]))))
        mx = int(marker[2] * (w - 2 * ms))
        my = int((marker[3] * 0.35 if marker[4] < 0.7 else 0.6 + 0.35 * marker[3]) * (h - 2 * ms))
        block = marker[5] < 0.5
        if block:
            sl = img[my:my + 2 * ms, mx:mx + int(1.6 * ms)]
            np.maximum(sl, 190.0 + 60.0 * marker[1], out=sl)
        lv = 40.0 if block else 245.0
        th = max(1, ms // 4)
        x0, y0 = mx + ms // 3, my + ms // 3
        cv2.line(img, (x0, y0), (x0, y0 + ms + ms // 2), lv, th)
        cv2.line(img, (x0, y0 + ms + ms // 2), (x0 + ms - th, y0 + ms + ms // 2), lv, th)

    # -- detector: blur, gamma, heel effect, noise -------------------------------------------
    img = cv2.GaussianBlur(img, (0, 0), (0.35 + 0.75 * noise_u[0]) * h / 320.0 + 0.3)
    np.clip(img, 0.0, 255.0, out=img)
    img = 255.0 * (img * (1.0 / 255.0)) ** math.exp((expo[5] - 0.5) * 0.8)
    if noise_u[2] < 0.5:
        img += np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None] * (12.0 * (expo[6] - 0.5))
    amp = 1.0 + 7.0 * noise_u[1]
    noise = nrng.standard_normal((h, w), dtype=np.float32)
    img += noise * (amp * (0.3 + np.sqrt(np.maximum(img, 0.0) * (1.0 / 255.0))))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------
# Canonical view, for tests and figures
# --------------------------------------------------------------------------------------

_CANON_FILL = 0.9  # hand length / film height in the canonical view
_CANON_CENTRE = (12.0, 95.5)  # adult-layout mm put at the film centre
_WRIST_MM = ((-26.0, 34.0), (-14.0, 42.0))  # adult-layout (x, y) box: distal forearm + carpus


def _canonical_affine(h: int, w: int, g: float) -> np.ndarray:
    s = _CANON_FILL * h / (_ADULT_LEN_MM * g)
    cx, cy = _CANON_CENTRE
    return np.array([[s, 0.0, w / 2 - s * cx * g], [0.0, -s, h / 2 + s * cy * g]])


def bone_map(boneage_months: float, male: bool, rng: np.random.Generator,
             height: int = 320) -> np.ndarray:
    """Noise-free bone density (float32, film shape) of the hand, without nuisances.

    The hand is upright, in a neutral pose and scaled to its own length, so every
    landmark sits at the same pixel whatever the age: differences between two maps drawn
    from equal rng states are maturity alone. :func:`wrist_box` gives the carpal region.
    """
    h = int(height)
    w = int(round(h * 4 / 5))
    bio = _draw_bio(rng)
    pose = _Pose(1.0, np.zeros(_N_RAY), 0.0, np.zeros((_N_RAY, 3)))
    hand = _layout_hand(float(boneage_months), bool(male), bio, pose)
    cv = _Canvas(h, w, _canonical_affine(h, w, hand_growth(boneage_months, male)))
    _paint_hand(cv, hand)
    bone = np.zeros((h, w), np.float32)
    for o, i in zip(cv.outer, cv.inner):
        bone += cv2.subtract(o, i).astype(np.float32)
    return bone * (1.0 / _BONE_VALUE)


def wrist_box(height: int = 320) -> tuple[slice, slice]:
    """(rows, cols) of the distal forearm and carpus in a :func:`bone_map`."""
    h = int(height)
    w = int(round(h * 4 / 5))
    m = _canonical_affine(h, w, 1.0)
    (x0, x1), (y0, y1) = _WRIST_MM
    c0 = m @ np.array([x0, y1, 1.0])
    c1 = m @ np.array([x1, y0, 1.0])
    return (slice(max(0, int(c0[1])), min(h, int(math.ceil(c1[1])))),
            slice(max(0, int(c0[0])), min(w, int(math.ceil(c1[0])))))


# --------------------------------------------------------------------------------------
# Data set
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticFilm:
    """One synthetic film and its labels, like a row of the RSNA training CSV."""

    id: str
    image: np.ndarray
    boneage: float
    male: bool


def _film(i: int, height: int, seed: int, max_age_months: float) -> SyntheticFilm:
    rng = np.random.default_rng([int(seed), int(i)])
    top = max(1, int(round(max_age_months)))
    age = float(rng.integers(1, top + 1))
    male = bool(rng.random() < 0.5)
    return SyntheticFilm(f"syn-{i:06d}", render_film(age, male, rng, height), age, male)


def generate(count: int, height: int = 320, seed: int = 0,
             max_age_months: float = 228.0, start: int = 0) -> Iterator[SyntheticFilm]:
    """Yield films ``start .. start+count-1``; film ``i`` depends only on ``(seed, i)``.

    So a prefix of a bigger set equals the smaller set, and slices can be rendered in
    parallel. Ages are whole months, uniform over 1..max_age_months; sex is 50/50.
    """
    if count < 0 or start < 0:
        raise ValueError(f"count and start must be >= 0, got {count}, {start}")
    for i in range(int(start), int(start) + int(count)):
        yield _film(i, height, seed, max_age_months)
