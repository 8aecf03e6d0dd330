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
share every nuisance and differ only by maturity (used by the tests).
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
    1: (27.0, 30.0, 40.0, 8.0, (44.0, 31.0, 0.0, 23.0), 1.12),
    2: (12.0, 41.0, 7.0, 7.0, (67.0, 40.0, 23.0, 17.0), 1.0),
    3: (2.0, 42.0, 0.0, 0.0, (64.0, 45.0, 28.0, 19.0), 1.02),
    4: (-8.0, 40.0, -6.0, -7.0, (57.0, 42.0, 27.0, 18.0), 0.95),
    5: (-17.0, 36.0, -13.0, -14.0, (51.0, 33.0, 19.0, 16.0), 0.85),
}
# bone kind -> (proximal end width, waist, distal end width, profile power,
#               distal cap as a fraction of the distal width)
_BONE_W = {
    "mc": (10.0, 7.5, 10.0, 3.0, 0.12),
    "mc1": (11.5, 8.5, 11.0, 3.0, 0.35),
    "pp": (11.0, 7.2, 9.2, 3.0, 0.3),
    "mp": (9.2, 6.3, 7.8, 3.0, 0.3),
    "dp": (8.3, 3.6, 5.2, 3.0, 0.45),
}
# carpal: (cx, cy, rx, ry, rotation deg, squareness of the adult form, density)
_CARPAL_GEOM = {
    "scaphoid": (15.5, 10.5, 11.5, 6.3, 55.0, 2.6, 0.95),
    "lunate": (2.0, 9.0, 7.8, 7.2, 0.0, 3.0, 0.95),
    "triquetrum": (-11.0, 14.0, 6.8, 5.6, -30.0, 3.0, 0.9),
    "pisiform": (-14.0, 11.0, 4.6, 4.4, 0.0, 2.2, 0.55),
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
    a = s * length
    t = np.linspace(np.pi / 2, -np.pi / 2, 7)[1:-1]
    right = np.stack([a, w / 2], 1)
    cap_d = np.stack([length + cap1 * np.cos(t), w1 / 2 * np.sin(t)], 1)
    left = np.stack([a[::-1], -w[::-1] / 2], 1)
    cap_p = np.stack([-cap0 * np.cos(t), -w0 / 2 * np.sin(t)], 1)
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
    forearm_len: float
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
        tissue_w=float(rng.uniform(0.9, 1.25)),
        forearm_len=float(rng.uniform(60.0, 160.0)),
        ulna_variance=float(rng.normal(-2.0, 1.5)),
        common=float(np.clip(rng.normal(0.0, 3.0), -8.0, 8.0)),
    )


def _unit(deg: float) -> np.ndarray:
    r = math.radians(deg)
    return np.array([math.sin(r), math.cos(r)])


def _epiphysis_shape(width: float, thick: float, stage: float, p: float) -> np.ndarray:
    """Epiphysis outline, local coords with +along towards the joint, origin at the face
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


def _draw_long_bone(cv: _Canvas, layer: int, origin: np.ndarray, u: np.ndarray, length: float,
                    widths: tuple, epi_end: str | None, st: StructureState | None,
                    density: float, cortex: float, gap_mm: float, epi_thick: float = 0.36,
                    epi_p: float = 2.8, tilt: float = 0.0, cap_free: float = 0.3) -> None:
    """A tubular bone from ``origin`` along ``u``, with its epiphysis at ``epi_end``.

    The epiphyseal zone (cartilage in the young) is reserved whatever the maturity; the
    ossified epiphysis sits in it separated by the growth plate, which closes at fusion
    and leaves a scar line that fades over about two years.
    """
    w0, wm, w1, power = widths
    wmeta = w0 if epi_end == "prox" else w1
    zone = epi_thick * wmeta + gap_mm
    shaft_len = length - zone if epi_end else length
    shaft_org = origin + u * zone if epi_end == "prox" else origin
    cap_meta = -0.04 * wmeta
    cap0, cap1 = (cap_meta, cap_free * w1) if epi_end == "prox" else (0.12 * w0, cap_meta)
    if epi_end is None:
        cap0, cap1 = 0.12 * w0, cap_free * w1
    local = _long_bone(shaft_len, w0, wm, w1, power, cap0, cap1)
    if tilt:
        # the distal radius slants: its styloid (thumb side) reaches further
        ramp = np.clip(local[:, 0] / shaft_len, 0, 1) ** 8
        local[:, 0] += tilt * local[:, 1] * ramp
    inner = None
    if cortex < 0.5:
        k = 1.0 - 2.0 * cortex
        inner = _long_bone(shaft_len * 0.8, w0 * k * 0.9, wm * k, w1 * k * 0.9, power, 0.0, 0.0, 7)
        inner[:, 0] += shaft_len * 0.1
    cv.bone(layer, local, shaft_org, u, _BONE_VALUE * density, inner, _BONE_VALUE * density * 0.38)

    if epi_end is None or st is None or not st.present:
        return
    s = st.stage
    ew = wmeta * (0.22 + 0.83 * min(1.0, s / 0.7) ** 0.85)
    et = min(ew, epi_thick * wmeta * (0.35 + 0.65 * min(1.0, s / 0.7)))
    if st.fused:
        gap = -0.25
    elif s > 0.8:
        gap = gap_mm * (1.0 - s) / 0.2
    else:
        gap = gap_mm + (1.0 - min(1.0, s / 0.5)) * 0.6 * (zone - et - gap_mm)
    shape = _epiphysis_shape(ew, et, s, epi_p)
    if epi_end == "prox":
        face = shaft_org - u * gap
        sgn = -1.0
    else:
        face = shaft_org + u * (shaft_len + gap)
        sgn = 1.0
    shape[:, 0] *= sgn
    if tilt:
        shape[:, 0] += tilt * shape[:, 1] * (1.0 + 0.8 * shape[:, 1] / max(ew, 1e-3))
    inner = np.stack([shape[:, 0] * 0.6 + sgn * et * 0.2, shape[:, 1] * 0.72], 1)
    cv.bone(layer, shape, face, u, _BONE_VALUE * density * 0.92, inner, _BONE_VALUE * density * 0.3)
    if st.fused and st.months_since_fusion < 36:
        # physeal scar: a thin dense line where the plate was; lift the medulla there
        fade = math.exp(-st.months_since_fusion / 14.0)
        n = np.array([u[1], -u[0]])
        half = 0.42 * wmeta
        sc = np.stack([face - n * half, face + n * half])
        val = _BONE_VALUE * density * 0.38 * (1.0 - 0.9 * fade)
        cv.line(cv.inner[layer], sc, val, 0.5)


def _draw_hand(cv: _Canvas, age: float, male: bool, bio: _Bio, spread: float,
               finger_jitter: np.ndarray, thumb_angle: float, flex: np.ndarray) -> None:
    st = structure_states(age + bio.common, male, bio.appear, bio.fuse)
    g = hand_growth(age, male)
    # bones thicken with maturity more than they lengthen
    mat = min(1.0, max(0.0, age / 200.0))
    wg = g * bio.slender * (0.86 + 0.14 * mat)
    cortex = 0.17 + 0.1 * mat
    dens = 0.78 + 0.22 * mat
    gap = 1.1 * (0.7 + 0.3 * g)
    joint = 1.6 + 2.2 * (1.0 - mat)  # cartilage-rich joints of the young look wide

    # ---- soft tissue (drawn first: it only needs the ray geometry computed below)
    tips: list[np.ndarray] = []
    finger_lines: list[tuple[np.ndarray, float]] = []
    mc_heads: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    bone_jobs = []

    # ---- forearm
    fl = bio.forearm_len * g + 40.0
    rad_x, uln_x = 12.0 * g, -12.0 * g
    ru = np.array([0.0, 1.0])
    bone_jobs.append((0, np.array([rad_x, -fl]), ru, fl, (16 * wg, 15 * wg, 29 * wg, 7.0),
                      "dist", st["radius"], 1.1 * dens, 0.34, 2.6, 0.14, (0.3, 2.6, 0.22)))
    ul_len = fl + bio.ulna_variance * g - 1.0 * g
    bone_jobs.append((1, np.array([uln_x, -fl]), ru, ul_len, (12 * wg, 10.5 * wg, 15.5 * wg, 7.0),
                      "dist", st["ulna"], 1.05 * dens, 0.5, 2.2, 0.0, (0.5, 2.2, 0.0)))

    # ---- carpals
    carpal_jobs = []
    for k, (name, (cx, cy, rx, ry, rot, sq, d)) in enumerate(_CARPAL_GEOM.items()):
        s = st[name]
        if not s.present:
            continue
        grow = 0.14 + 0.86 * s.stage**0.75
        size = g * bio.carpal_size[k] * grow
        p = 2.0 + (sq - 2.0) * s.stage
        shape = _superellipse(rx * size, ry * size, p, 20)
        if name == "hamate":  # hook-ish wedge: narrower towards the ulnar side
            shape[:, 0] *= 1.0 - 0.25 * s.stage * (shape[:, 1] / max(ry * size, 1e-3))
        if name == "capitate":  # rounded head proximally, waist in the middle
            shape[:, 0] *= 1.0 - 0.12 * s.stage * np.exp(-((shape[:, 1] / max(ry * size, 1e-3)) ** 2) * 6)
        shape = shape @ _rot(rot).T
        c = np.array([cx, cy]) * g + bio.carpal_xy[k] * g
        carpal_jobs.append((_CARPAL_LAYER[name], shape + c, shape * 0.7 + c, d * dens))

    # ---- rays
    for r in range(1, 6):
        bx, by, mc_deg, abd, lens, wf = _RAYS[r]
        lens = [x * g * bio.ray_len[r - 1] for x in lens]
        wfr = wf * bio.ray_w[r - 1] * wg
        ang = mc_deg * (0.85 + 0.15 * spread) + finger_jitter[r - 1] * 0.3
        if r == 1:
            ang = mc_deg + thumb_angle
        base = np.array([bx, by]) * g
        u = _unit(ang)
        layer = 1 if r % 2 else 0
        if r == 1:
            w = _BONE_W["mc1"]
            bone_jobs.append((layer, base, u, lens[0], (w[0] * wfr, w[1] * wfr, w[2] * wfr, w[3]),
                              "prox", st["mc1"], dens, cortex, gap, w[4], (0.36, 2.8, 0.0)))
        else:
            w = _BONE_W["mc"]
            bone_jobs.append((layer, base, u, lens[0], (w[0] * wfr, w[1] * wfr, w[2] * wfr, w[3]),
                              "dist", st[f"mc{r}"], dens, cortex, gap, w[4], (0.62, 2.2, 0.0)))
        head = base + u * lens[0]
        mc_heads[r] = (head, u)
        p = head + u * joint
        ang_f = ang + (abd * spread if r > 1 else 0.0) + finger_jitter[r - 1]
        kinds = ("pp", "mp", "dp") if r > 1 else ("pp", "dp")
        blens = (lens[1], lens[2], lens[3]) if r > 1 else (lens[1], lens[3])
        start = p.copy()
        for j, (kind, L) in enumerate(zip(kinds, blens)):
            ang_f += flex[r - 1, j]
            u2 = _unit(ang_f)
            w = _BONE_W[kind]
            wk = wfr * (1.12 if r == 1 else 1.0)
            bone_jobs.append((layer, p.copy(), u2, L, (w[0] * wk, w[1] * wk, w[2] * wk, w[3]),
                              "prox", st[f"{kind}{r}"], dens * (0.9 if kind == "dp" else 0.97),
                              cortex, gap, w[4], (0.36, 2.8, 0.0)))
            p = p + u2 * (L + joint)
        tip = p + _unit(ang_f) * (1.5 * g)
        tips.append(tip)
        fw = (2.05 * _BONE_W["pp"][1] * wfr + 2.5 * g) * bio.tissue_w
        if r == 1:
            finger_lines.append((np.stack([base + u * lens[0] * 0.45, head, start, tip]), fw * 1.08))
        else:
            finger_lines.append((np.stack([head, start, tip]), fw))

    # sesamoid: ulnar side of the thumb metacarpal head, superimposed on it
    ses = st["sesamoid"]
    if ses.present:
        head, u = mc_heads[1]
        n = np.array([u[1], -u[0]])
        rad = g * (0.6 + 2.4 * ses.stage**0.7)
        c = head - u * (1.5 * g) - n * (3.2 * g)
        carpal_jobs.append((2, _superellipse(rad, rad * 0.9, 2.0, 14) + c, None, 0.8 * dens))

    # ---- soft tissue silhouette: fingers, palm, forearm; thicker parts drawn brighter
    tw = bio.tissue_w
    for pts, fw in finger_lines:
        cv.line(cv.tissue, pts, 190, fw)
    h1, u1 = mc_heads[1]
    h2, u2 = mc_heads[2]
    h5, u5 = mc_heads[5]
    n5 = np.array([u5[1], -u5[0]])
    n1 = np.array([u1[1], -u1[0]])
    web = [mc_heads[r][0] + mc_heads[r][1] * (0.3 * _RAYS[r][4][1] * g) for r in (5, 4, 3, 2)]
    palm = np.stack([
        np.array([-27.0 * tw, 10.0]) * g,
        np.array([-29.0 * tw, 40.0]) * g,
        h5 - n5 * (8.0 * g * tw) - u5 * (6.0 * g),
        web[0] - n5 * (5.0 * g * tw),
        *web,
        h2 + u2 * (2.0 * g) + np.array([u2[1], -u2[0]]) * (6.0 * g * tw),
        h1 - u1 * (10.0 * g) - n1 * (6.0 * g * tw),
        h1 - u1 * (25.0 * g) + n1 * (7.0 * g * tw),
        np.array([30.0 * tw, 15.0]) * g,
        np.array([28.0 * tw, 0.0]) * g,
    ])
    cv.poly(cv.tissue, palm, 225)
    fw_half = 27.0 * g * tw
    arm = np.array([[-fw_half, 12.0 * g], [-fw_half * 0.95, -fl - 80.0],
                    [fw_half * 0.95, -fl - 80.0], [fw_half * 1.05, 12.0 * g]])
    cv.poly(cv.tissue, arm, 255)

    for layer, org, u, L, w, end, s, d, ctx, gp, capf, (e_thick, e_p, tilt) in bone_jobs:
        _draw_long_bone(cv, layer, org, u, L, w, end, s, d, ctx, gp, e_thick, e_p, tilt, capf)
    for layer, outer, inner, d in carpal_jobs:
        cv.poly(cv.outer[layer], outer, _BONE_VALUE * d)
        if inner is not None:
            cv.poly(cv.inner[layer], inner, _BONE_VALUE * d * 0.28)

    return None


# --------------------------------------------------------------------------------------
# Film: projection, exposure, plate, marker, noise
# --------------------------------------------------------------------------------------

_ADULT_LEN_MM = 215.0  # radius epiphysis to middle fingertip of the layout, adult male


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

    # -- all draws, fixed order ---------------------------------------------------------
    bio = _draw_bio(rng)
    spread = float(rng.uniform(0.2, 1.9))
    finger_jitter = rng.normal(0.0, 3.0, _N_RAY)
    thumb_angle = float(rng.normal(0.0, 7.0))
    flex = rng.normal(0.0, 2.5, (_N_RAY, 3))
    cropped = rng.random() < 0.4
    fill_crop = float(rng.uniform(0.86, 1.02))
    log_mag = float(rng.uniform(-0.38, 0.38))
    rot = float(rng.uniform(-15.0, 15.0))
    shift = rng.uniform(-1.0, 1.0, 2)
    plate = rng.random(6)   # [has plate edge, border line, field rotation, ...]
    field = rng.uniform(0.0, 1.0, 6)
    marker = rng.random(6)
    expo = rng.random(10)
    noise_u = rng.random(3)
    noise_seed = int(rng.integers(0, 2**31 - 1))

    # -- geometry: hand frame (mm) -> pixels ----------------------------------------------
    g = hand_growth(age, male)
    hand_len = _ADULT_LEN_MM * g
    if cropped:
        # cropped to the hand like the full-resolution RSNA films: size carries no age
        px_per_mm = fill_crop * h / hand_len
    else:
        # whole plate: the hand's apparent size = growth x magnification, and the
        # magnification spread is as wide as the growth effect itself
        px_per_mm = 0.62 * h / (_ADULT_LEN_MM * 0.8) * math.exp(log_mag)
        px_per_mm = min(px_per_mm, 1.0 * h / hand_len)
    hand_px = hand_len * px_per_mm
    cx = w / 2 + shift[0] * 0.12 * w
    top = (h - hand_px) * (0.5 + 0.5 * shift[1]) if not cropped else (0.03 + 0.05 * (shift[1] + 1) / 2) * h
    cy = top + 0.55 * hand_px
    centre_mm = np.array([4.0 * g, hand_len * 0.45 - 15.0 * g])
    r = math.radians(rot)
    a = px_per_mm * np.array([[math.cos(r), math.sin(r)], [math.sin(r), -math.cos(r)]])
    t = np.array([cx, cy]) - a @ centre_mm
    affine = np.concatenate([a, t[:, None]], 1)

    cv = _Canvas(h, w, affine)
    _draw_hand(cv, age, male, bio, spread, finger_jitter, thumb_angle, flex)

    # -- densities --------------------------------------------------------------------------
    s_px = cv.px_per_mm
    tissue = cv.tissue.astype(np.float32) * (1.0 / 255.0)
    ksig = max(0.6, 2.2 * s_px)
    tissue = cv2.GaussianBlur(tissue, (0, 0), ksig) ** 0.6 * cv2.GaussianBlur(tissue, (0, 0), 0.7)
    bone = np.zeros((h, w), np.float32)
    for o, i in zip(cv.outer, cv.inner):
        bone += cv2.subtract(o, i).astype(np.float32)
    bone *= 1.0 / _BONE_VALUE

    # -- exposure ------------------------------------------------------------------------
    k_t = 0.25 + 0.25 * expo[0]              # soft tissue contrast
    k_b = 0.4 + 0.35 * expo[1]               # bone contrast
    sig = k_t * tissue + k_b * bone
    comp = 0.3 + 2.2 * expo[2]               # film-curve compression (saturates bones)
    sig = (1.0 - np.exp(-comp * sig)) * (1.0 / (1.0 - math.exp(-comp * 0.8)))
    if cropped:
        bg = 2.0 + 22.0 * expo[3] ** 2
    else:
        bg = 15.0 + 140.0 * expo[3]
    span = (250.0 - bg) * (0.5 + 0.5 * expo[4])
    img = bg + span * sig

    # -- plate / collimated field ---------------------------------------------------------
    if not cropped:
        fw_ = w * (0.78 + 0.3 * field[0])
        fh_ = h * (0.82 + 0.28 * field[1])
        fr = (field[2] - 0.5) * (40.0 if plate[1] < 0.25 else 10.0)
        fc = (w / 2 + (field[3] - 0.5) * 0.15 * w, h / 2 + (field[4] - 0.5) * 0.12 * h)
        box = cv2.boxPoints((fc, (fw_, fh_), fr))
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(box * _ONE).astype(np.int32)], 255, _AA, _SHIFT)
        mk = cv2.GaussianBlur(mask.astype(np.float32) * (1 / 255.0), (0, 0), 0.8)
        out_level = 150.0 + 100.0 * field[5] if plate[2] < 0.6 else 5.0 + 40.0 * field[5]
        outside = out_level + 0.15 * (img - bg)
        img = img * mk + outside * (1.0 - mk)
        if plate[0] < 0.6:  # bright plate edge line
            edge = np.zeros((h, w), np.uint8)
            th = max(1, int(round(h / 200)))
            cv2.polylines(edge, [np.round(box * _ONE).astype(np.int32)], True, 255, th, _AA, _SHIFT)
            img = np.maximum(img, edge.astype(np.float32) * (0.6 + 0.4 * plate[3]))

    # -- "L" marker ----------------------------------------------------------------------
    if marker[0] < 0.6:
        ms = max(4, int(round(h * (0.035 + 0.035 * marker[1]))))
        mx = int(marker[2] * (w - 2 * ms))
        my = int((marker[3] * 0.35 if marker[4] < 0.7 else 0.6 + 0.35 * marker[3]) * (h - 2 * ms))
        block = marker[5] < 0.5
        if block:
            img[my:my + 2 * ms, mx:mx + int(1.6 * ms)] = np.maximum(
                img[my:my + 2 * ms, mx:mx + int(1.6 * ms)], 190.0 + 60 * marker[1])
        lv = 40.0 if block else 245.0
        th = max(1, ms // 4)
        x0, y0 = mx + ms // 3, my + ms // 3
        cv2.line(img, (x0, y0), (x0, y0 + ms + ms // 2), lv, th)
        cv2.line(img, (x0, y0 + ms + ms // 2), (x0 + ms - th, y0 + ms + ms // 2), lv, th)

    # -- detector: blur, gamma, noise ------------------------------------------------------
    img = cv2.GaussianBlur(img, (0, 0), (0.35 + 0.75 * noise_u[0]) * h / 320.0 + 0.3)
    gamma = math.exp((expo[5] - 0.5) * 0.8)
    np.clip(img, 0.0, 255.0, out=img)
    img = 255.0 * (img * (1.0 / 255.0)) ** gamma
    nrng = np.random.default_rng(noise_seed)
    amp = 1.0 + 7.0 * noise_u[1]
    noise = nrng.standard_normal((h, w), dtype=np.float32)
    img += noise * (amp * (0.3 + np.sqrt(img * (1.0 / 255.0))))
    if noise_u[2] < 0.5:  # slight exposure gradient (heel effect)
        ramp = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
        img += ramp * (12.0 * (expo[6] - 0.5))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


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
             max_age_months: float = 228.0) -> Iterator[SyntheticFilm]:
    """Yield ``count`` films; film ``i`` depends only on ``(seed, i)``.

    So a prefix of a bigger set equals the smaller set, and slices can be rendered in
    parallel. Ages are whole months, uniform over 1..max_age_months; sex is 50/50.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    for i in range(int(count)):
        yield _film(i, height, seed, max_age_months)
