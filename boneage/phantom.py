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

How a film is made (:func:`render_film`):

1. ``_draw_film``: every random number, in a fixed order (biology, pose, nuisances);
2. ``_layout_hand``: every structure as outlines in hand mm (forearm, carpals, one ray
   per digit, sesamoid, soft tissue), for this age, sex, biology and pose;
3. ``_film_affine`` + ``_paint_hand``: the outlines rasterised onto uint8 layers (px);
4. ``_densities``, ``_expose``, ``_collimate``, ``_burn_marker``, ``_detect``: layers to
   tissue/bone density, film curve, plate, marker, blur, gamma and noise.

Changing any arithmetic or the order of the rng draws changes the films, hence the
default pipeline's data: tests/test_phantom.py and a bit-for-bit comparison guard it.
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


def _epiphysis_timing(*, appear: tuple[float, float], fuse: tuple[float, float]) -> Timing:
    """Timing of an epiphysis from (girls, boys) month pairs; it matures when it fuses."""
    (appear_f, appear_m), (fuse_f, fuse_m) = appear, fuse
    return Timing(appear_f, appear_m, fuse_f, fuse_m, mature_f=fuse_f, mature_m=fuse_m)


# Distal phalanges fuse first, then proximal/middle phalanges and metacarpals, then the
# distal ulna and last the distal radius (shared/reference/hand-maturation.md).
_FUSE_DP = (162.0, 186.0)  # months (girls, boys)
_FUSE_PP = (174.0, 198.0)  # months (girls, boys)

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
    "radius": _epiphysis_timing(appear=(10.0, 15.0), fuse=(198.0, 222.0)),
    "ulna": _epiphysis_timing(appear=(72.0, 84.0), fuse=(192.0, 216.0)),
    # epiphyses: metacarpals (base of the first, heads of the others)
    "mc1": _epiphysis_timing(appear=(18.0, 26.0), fuse=_FUSE_PP),
    "mc2": _epiphysis_timing(appear=(13.0, 18.0), fuse=_FUSE_PP),
    "mc3": _epiphysis_timing(appear=(14.0, 20.0), fuse=_FUSE_PP),
    "mc4": _epiphysis_timing(appear=(15.0, 21.0), fuse=_FUSE_PP),
    "mc5": _epiphysis_timing(appear=(16.0, 23.0), fuse=_FUSE_PP),
    # epiphyses: phalanges (all at the base)
    "pp1": _epiphysis_timing(appear=(15.0, 20.0), fuse=_FUSE_PP),
    "pp2": _epiphysis_timing(appear=(12.0, 16.0), fuse=_FUSE_PP),
    "pp3": _epiphysis_timing(appear=(11.0, 15.0), fuse=_FUSE_PP),
    "pp4": _epiphysis_timing(appear=(12.0, 16.0), fuse=_FUSE_PP),
    "pp5": _epiphysis_timing(appear=(14.0, 19.0), fuse=_FUSE_PP),
    "mp2": _epiphysis_timing(appear=(17.0, 24.0), fuse=_FUSE_PP),
    "mp3": _epiphysis_timing(appear=(16.0, 22.0), fuse=_FUSE_PP),
    "mp4": _epiphysis_timing(appear=(16.0, 22.0), fuse=_FUSE_PP),
    "mp5": _epiphysis_timing(appear=(22.0, 34.0), fuse=_FUSE_PP),
    "dp1": _epiphysis_timing(appear=(13.0, 18.0), fuse=_FUSE_DP),
    "dp2": _epiphysis_timing(appear=(20.0, 28.0), fuse=_FUSE_DP),
    "dp3": _epiphysis_timing(appear=(18.0, 26.0), fuse=_FUSE_DP),
    "dp4": _epiphysis_timing(appear=(18.0, 26.0), fuse=_FUSE_DP),
    "dp5": _epiphysis_timing(appear=(22.0, 32.0), fuse=_FUSE_DP),
}

CARPALS = ("capitate", "hamate", "triquetrum", "lunate", "trapezium", "trapezoid", "scaphoid",
           "pisiform")
EPIPHYSES = tuple(k for k, t in TIMELINE.items() if t.fuse_f is not None)
_STRUCTURE_NAMES = tuple(TIMELINE)  # the order of the per-structure jitter draws


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
    biological jitter; without them this is the plain reference table. Returns one
    :class:`StructureState` per :data:`TIMELINE` name, in its order. The appearance
    shift moves the whole course (appearance, fusion or maturity); the fusion shift
    moves only its end, and the course lasts at least 12 months.
    """
    states: dict[str, StructureState] = {}
    age = float(boneage_months)
    for name, timing in TIMELINE.items():
        appear_delta = appear_shift.get(name, 0.0) if appear_shift else 0.0  # months
        fuse_delta = fuse_shift.get(name, 0.0) if fuse_shift else 0.0  # months
        start = timing.appear(male) + appear_delta  # months: stage 0
        fuse_age = timing.fuse(male)
        if fuse_age is None:  # never fuses: the course ends at the adult form
            end = timing.mature(male) + appear_delta + fuse_delta
            fused, since = False, -1.0
        else:
            end = fuse_age + appear_delta + fuse_delta
            fused, since = age >= end, age - end
        end = max(end, start + 12.0)  # months: stage 1
        stage = min(max((age - start) / (end - start), 0.0), 1.0)
        states[name] = StructureState(age >= start, stage, fused, since)
    return states


def hand_growth(boneage_months: float, male: bool) -> float:
    """Hand length relative to an adult male hand: about doubles from 1 to 15 years."""
    growth_months = float(boneage_months) * (1.0 if male else 1.1)  # girls grow earlier
    adult = 1.0 if male else 0.93  # adult female / male hand length
    return adult * (1.0 - 0.6 * math.exp(-growth_months / 80.0))


# --------------------------------------------------------------------------------------
# Adult hand layout (mm, hand frame: wrist origin, +y to the fingers, +x to the thumb)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ray:
    """Adult male geometry of one ray: a metacarpal and the phalanges of its digit."""

    base: tuple[float, float]  # (x, y) mm, base of the metacarpal
    metacarpal_deg: float      # axis angle from +y, + = towards the thumb
    abduction_deg: float       # extra angle of the digit at full finger spread
    lengths: tuple[float, float, float, float]  # mm: mc, pp, mp, dp (mp 0 for the thumb)
    width: float               # width factor of all its bones


# ray number (1 thumb .. 5 little finger) -> geometry
_RAYS = {
    1: _Ray(base=(25.0, 26.0), metacarpal_deg=36.0, abduction_deg=6.0,
            lengths=(44.0, 31.0, 0.0, 23.0), width=1.12),
    2: _Ray(base=(12.5, 40.0), metacarpal_deg=10.0, abduction_deg=5.0,
            lengths=(67.0, 40.0, 23.0, 17.0), width=1.0),
    3: _Ray(base=(2.0, 41.0), metacarpal_deg=0.0, abduction_deg=0.0,
            lengths=(64.0, 45.0, 28.0, 19.0), width=1.02),
    4: _Ray(base=(-8.5, 39.0), metacarpal_deg=-9.0, abduction_deg=-5.0,
            lengths=(57.0, 42.0, 27.0, 18.0), width=0.95),
    5: _Ray(base=(-18.0, 35.0), metacarpal_deg=-19.0, abduction_deg=-9.0,
            lengths=(51.0, 33.0, 19.0, 16.0), width=0.85),
}


@dataclass(frozen=True)
class _TubeProfile:
    """Adult widths of one kind of tubular bone (before the ray's width factor)."""

    proximal: float  # mm, width of the proximal end
    waist: float     # mm, width of the narrowest part of the shaft
    distal: float    # mm, width of the distal end
    power: float     # how sharply the ends flare out of the waist
    cap: float       # bulge of the end without epiphysis / its width

    def widths(self, scale: float) -> tuple[float, float, float]:
        """(proximal, waist, distal) mm, each times ``scale``."""
        return (self.proximal * scale, self.waist * scale, self.distal * scale)


# bone kind -> profile: "mc1" is the thumb metacarpal, "mc" the others
_TUBE_PROFILES = {
    "mc": _TubeProfile(proximal=11.5, waist=8.6, distal=11.5, power=3.0, cap=0.12),
    "mc1": _TubeProfile(proximal=13.0, waist=9.8, distal=12.6, power=3.0, cap=0.35),
    "pp": _TubeProfile(proximal=12.6, waist=8.3, distal=10.6, power=3.0, cap=0.3),
    "mp": _TubeProfile(proximal=10.6, waist=7.2, distal=9.0, power=3.0, cap=0.3),
    "dp": _TubeProfile(proximal=9.5, waist=4.1, distal=6.0, power=3.0, cap=0.45),
}


@dataclass(frozen=True)
class _CarpalShape:
    """Adult male geometry of one carpal bone: a rotated superellipse."""

    centre: tuple[float, float]  # (x, y) mm
    radii: tuple[float, float]   # (x, y) mm, before rotation
    rotation_deg: float
    squareness: float            # superellipse power of the adult form (2: ellipse)
    density: float               # relative to the film's bone density
    # which of the three bone layers it goes to: neighbours on different layers add up
    # where they overlap, like the packed adult carpus does on a real film
    layer: int


# in the order of the per-carpal jitter draws
_CARPAL_SHAPES = {
    "scaphoid": _CarpalShape(centre=(15.5, 10.5), radii=(11.5, 6.3), rotation_deg=55.0,
                             squareness=2.6, density=0.95, layer=0),
    "lunate": _CarpalShape(centre=(2.0, 9.0), radii=(7.8, 7.2), rotation_deg=0.0,
                           squareness=3.0, density=0.95, layer=1),
    "triquetrum": _CarpalShape(centre=(-11.0, 14.0), radii=(6.8, 5.6), rotation_deg=-30.0,
                               squareness=3.0, density=0.9, layer=0),
    "pisiform": _CarpalShape(centre=(-14.0, 11.0), radii=(4.6, 4.4), rotation_deg=0.0,
                             squareness=2.2, density=0.4, layer=2),
    "trapezium": _CarpalShape(centre=(23.5, 25.5), radii=(8.0, 7.2), rotation_deg=35.0,
                              squareness=3.2, density=0.95, layer=1),
    "trapezoid": _CarpalShape(centre=(13.5, 29.0), radii=(5.6, 6.8), rotation_deg=10.0,
                              squareness=3.4, density=0.95, layer=0),
    "capitate": _CarpalShape(centre=(2.5, 26.5), radii=(7.0, 11.5), rotation_deg=0.0,
                             squareness=3.0, density=1.0, layer=1),
    "hamate": _CarpalShape(centre=(-9.5, 26.0), radii=(7.2, 10.0), rotation_deg=-12.0,
                           squareness=3.0, density=0.95, layer=0),
}

_N_RAY = 5
_N_CARPAL = len(_CARPAL_SHAPES)
_ADULT_LEN_MM = 215.0  # distal radius metaphysis to middle fingertip, adult male layout


# --------------------------------------------------------------------------------------
# Geometry and drawing primitives
# --------------------------------------------------------------------------------------

_SHIFT = 4  # fractional bits handed to cv2 drawing calls
_ONE = float(1 << _SHIFT)  # 1 px in those fixed-point units
_AA = cv2.LINE_AA
_BONE_VALUE = 200.0  # uint8 level of density 1.0 on the bone layers
_MEDULLA = 0.2  # density lost in the medullary canal: the cortex looks brighter


def _rotation(deg: float) -> np.ndarray:
    """(2, 2) counter-clockwise rotation by ``deg`` degrees."""
    rad = math.radians(deg)
    return np.array([[math.cos(rad), -math.sin(rad)], [math.sin(rad), math.cos(rad)]])


def _unit(deg: float) -> np.ndarray:
    """(2,) unit axis ``deg`` degrees from +y, positive towards +x (the thumb)."""
    rad = math.radians(deg)
    return np.array([math.sin(rad), math.cos(rad)])


def _normal(axis: np.ndarray) -> np.ndarray:
    """Unit normal of ``axis`` pointing to the thumb side when ``axis`` points up."""
    return np.array([axis[1], -axis[0]])


def _superellipse(radius_x: float, radius_y: float, power: float,
                  points: int = 20) -> np.ndarray:
    """(points, 2) outline |x/rx|^p + |y/ry|^p = 1, centred on the origin.

    ``power`` 2 is an ellipse; larger is squarer.
    """
    angle = np.linspace(0.0, 2 * np.pi, points, endpoint=False)
    cos, sin = np.cos(angle), np.sin(angle)
    exponent = 2.0 / power
    return np.stack([radius_x * np.sign(cos) * np.abs(cos) ** exponent,
                     radius_y * np.sign(sin) * np.abs(sin) ** exponent], 1)


def _tube_outline(length: float, *, widths: tuple[float, float, float], power: float,
                  caps: tuple[float, float], samples: int = 9) -> np.ndarray:
    """(2 * samples + 10, 2) outline of a tubular bone in local (along, across) mm.

    The shaft runs from along = 0 (proximal) to ``length`` (distal), centred on
    across = 0. ``widths`` (proximal end, waist, distal end; mm): the width flares from
    the waist to the ends (metaphyses, heads) as ``s ** power`` of the fraction ``s`` of
    the length. ``caps`` (proximal, distal; mm): the ends are half-ellipses bulging out
    by that much (negative: concave); a bulging end stays within ``length``.
    """
    proximal_w, waist_w, distal_w = widths
    proximal_cap, distal_cap = caps
    s = np.linspace(0.0, 1.0, samples)  # (samples,) fraction of the length
    width = (waist_w + (proximal_w - waist_w) * (1.0 - s) ** power
             + (distal_w - waist_w) * s**power)  # (samples,) mm
    start, end = max(proximal_cap, 0.0), length - max(distal_cap, 0.0)  # mm, along
    along = start + s * (end - start)  # (samples,) mm
    cap_angle = np.linspace(np.pi / 2, -np.pi / 2, 7)[1:-1]  # (5,) rad, ends excluded
    thumb_side = np.stack([along, width / 2], 1)
    distal_end = np.stack([end + distal_cap * np.cos(cap_angle),
                           distal_w / 2 * np.sin(cap_angle)], 1)
    other_side = np.stack([along[::-1], -width[::-1] / 2], 1)
    proximal_end = np.stack([start - proximal_cap * np.cos(cap_angle),
                             -proximal_w / 2 * np.sin(cap_angle)], 1)
    return np.concatenate([thumb_side, distal_end, other_side, proximal_end])


class _Canvas:
    """Bone layers, their medulla layers and a soft-tissue layer, drawn in hand frame mm.

    cv2 anti-aliasing only works on 8-bit images, so every layer is uint8 (height, width)
    and shapes on one layer overwrite (union) each other; the density map is formed from
    the layers afterwards. Three bone layers let neighbouring bones overlap additively.
    """

    def __init__(self, height: int, width: int, mm_to_px: np.ndarray):
        self.height, self.width = height, width
        self.mm_to_px = mm_to_px  # (2, 3) affine, hand mm -> pixels (x right, y down)
        self.px_per_mm = float(math.sqrt(abs(np.linalg.det(mm_to_px[:, :2]))))
        self.bone_layers = [np.zeros((height, width), np.uint8) for _ in range(3)]
        self.medulla_layers = [np.zeros((height, width), np.uint8) for _ in range(3)]
        self.tissue = np.zeros((height, width), np.uint8)

    def _fixed_point(self, points_mm: np.ndarray) -> np.ndarray:
        """(n, 2) hand mm -> (n, 2) int32 pixels with ``_SHIFT`` fractional bits."""
        px = points_mm @ self.mm_to_px[:, :2].T + self.mm_to_px[:, 2]
        return np.round(px * _ONE).astype(np.int32)

    def fill(self, layer: np.ndarray, outline_mm: np.ndarray, value: float) -> None:
        """Fill the polygon ``outline_mm`` (n, 2) on ``layer`` with ``value`` (uint8 level)."""
        cv2.fillPoly(layer, [self._fixed_point(outline_mm)], float(value), _AA, _SHIFT)

    def stroke(self, layer: np.ndarray, points_mm: np.ndarray, value: float,
               width_mm: float) -> None:
        """Draw the open polyline ``points_mm`` (n, 2), ``width_mm`` thick (>= 1 px)."""
        px = self._fixed_point(points_mm)
        thickness = max(1, int(round(width_mm * self.px_per_mm)))  # px
        cv2.polylines(layer, [px], False, float(value), thickness, _AA, _SHIFT)

    def draw_bone(self, layer: int, outline: np.ndarray, *, origin: np.ndarray,
                  axis: np.ndarray, value: float, medulla: np.ndarray | None = None,
                  medulla_value: float = 0.0) -> None:
        """Draw a shape given in local (along, across) mm of the unit ``axis`` at ``origin``.

        +across is the thumb side of the axis (:func:`_normal`). ``value`` (uint8 level)
        goes to bone layer ``layer``; the optional ``medulla`` outline (same local frame)
        to its medulla layer, whose level is later subtracted.
        """
        normal = _normal(axis)
        world = origin + outline[:, :1] * axis + outline[:, 1:] * normal
        self.fill(self.bone_layers[layer], world, value)
        if medulla is not None and medulla_value > 0:
            medulla_world = origin + medulla[:, :1] * axis + medulla[:, 1:] * normal
            self.fill(self.medulla_layers[layer], medulla_world, medulla_value)

    def bone_levels(self) -> np.ndarray:
        """(height, width) float32: bone minus medulla, summed over the layers (uint8 levels)."""
        levels = np.zeros((self.height, self.width), np.float32)
        for bone, medulla in zip(self.bone_layers, self.medulla_layers):
            levels += cv2.subtract(bone, medulla).astype(np.float32)
        return levels


# --------------------------------------------------------------------------------------
# Per-film biology and pose
# --------------------------------------------------------------------------------------


@dataclass
class _Biology:
    """Per-film biological jitter (see :func:`_draw_biology` for the draw order)."""

    appear_shift: dict[str, float]  # months, per structure: moves its whole course
    fuse_shift: dict[str, float]    # months, per structure: moves its fusion / maturity
    ray_length: np.ndarray          # (5,) length factor per ray
    ray_width: np.ndarray           # (5,) width factor per ray
    carpal_offset: np.ndarray       # (8, 2) mm (adult), per carpal in _CARPAL_SHAPES order
    carpal_size: np.ndarray         # (8,) size factor per carpal
    slenderness: float              # bone width / length ratio factor
    tissue_thickness: float         # soft tissue thickness factor
    ulna_variance: float            # mm (adult), distal ulna relative to the radius
    maturity_shift: float           # months, shift of the whole film's maturity (reader noise)


def _clipped_normal(rng: np.random.Generator,
                    shape: int | tuple[int, ...] | None = None) -> np.ndarray | float:
    """Standard normal draws clipped to +-2.5 sd: one draw per element of ``shape``."""
    return np.clip(rng.standard_normal(shape), -2.5, 2.5)


def _draw_biology(rng: np.random.Generator) -> _Biology:
    """Draw one film's biology. The order and count of draws are fixed: do not reorder."""
    appear_z = rng.standard_normal(len(_STRUCTURE_NAMES))
    fuse_z = rng.standard_normal(len(_STRUCTURE_NAMES))
    appear_shift, fuse_shift = {}, {}
    for k, name in enumerate(_STRUCTURE_NAMES):
        timing = TIMELINE[name]
        # months: 1 + 5% of the mean appearance age, at most 6; clipped to +-2.5 sd
        sd = min(1.0 + 0.05 * 0.5 * (timing.appear_f + timing.appear_m), 6.0)
        appear_shift[name] = float(np.clip(appear_z[k], -2.5, 2.5) * sd)
        fuse_shift[name] = float(np.clip(fuse_z[k], -2.5, 2.5) * 4.0)
    ray_length = 1.0 + 0.03 * _clipped_normal(rng, _N_RAY)
    ray_width = 1.0 + 0.05 * _clipped_normal(rng, _N_RAY)
    carpal_offset = 0.6 * _clipped_normal(rng, (_N_CARPAL, 2))
    carpal_size = 1.0 + 0.06 * _clipped_normal(rng, _N_CARPAL)
    slenderness = float(1.0 + 0.06 * _clipped_normal(rng))
    tissue_thickness = float(rng.uniform(0.92, 1.2))
    ulna_variance = float(rng.normal(-2.0, 1.5))
    maturity_shift = float(np.clip(rng.normal(0.0, 3.0), -8.0, 8.0))
    return _Biology(appear_shift=appear_shift, fuse_shift=fuse_shift, ray_length=ray_length,
                    ray_width=ray_width, carpal_offset=carpal_offset, carpal_size=carpal_size,
                    slenderness=slenderness, tissue_thickness=tissue_thickness,
                    ulna_variance=ulna_variance, maturity_shift=maturity_shift)


@dataclass
class _Pose:
    """Nuisance posture: finger spread and small joint angles (degrees)."""

    spread: float           # finger spread factor (1: the layout's abduction angles)
    finger_deg: np.ndarray  # (5,) per-ray turn, + = towards the thumb
    thumb_deg: float        # turn of the thumb metacarpal
    flex_deg: np.ndarray    # (5, 3) per ray and joint (pp, mp, dp; thumb: pp, dp)


def _draw_pose(rng: np.random.Generator) -> _Pose:
    """Draw one film's pose, in this fixed order."""
    spread = float(rng.uniform(0.2, 1.4))
    finger_deg = rng.normal(0.0, 3.0, _N_RAY)
    thumb_deg = float(rng.normal(0.0, 7.0))
    flex_deg = rng.normal(0.0, 2.5, (_N_RAY, 3))
    return _Pose(spread=spread, finger_deg=finger_deg, thumb_deg=thumb_deg, flex_deg=flex_deg)


def _neutral_pose() -> _Pose:
    """Upright hand, fingers at the layout's spread, joints straight (for bone_map)."""
    return _Pose(spread=1.0, finger_deg=np.zeros(_N_RAY), thumb_deg=0.0,
                 flex_deg=np.zeros((_N_RAY, 3)))


# --------------------------------------------------------------------------------------
# Layout: every structure as outlines in hand mm
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Maturity:
    """What bone age, sex and biology make of the whole hand of one film."""

    states: dict[str, StructureState]  # per TIMELINE name, at the film's shifted age
    growth: float      # hand length / adult male hand length (:func:`hand_growth`)
    bone_width: float  # width factor: growth x slenderness x thickening with age
    cortex: float      # cortex thickness / bone width
    density: float     # bone density (1.0: adult)
    plate_gap: float   # mm, width of an open growth plate
    joint_gap: float   # mm, between the bones of a ray: cartilage-rich in the young


def _maturity(age: float, male: bool, bio: _Biology) -> _Maturity:
    """Whole-hand maturity at ``age`` months; structure states include the film's shifts."""
    progress = min(1.0, max(0.0, age * (1.0 if male else 1.1) / 200.0))  # 0 -> 1, girls ahead
    growth = hand_growth(age, male)
    return _Maturity(
        states=structure_states(age + bio.maturity_shift, male, bio.appear_shift,
                                bio.fuse_shift),
        growth=growth,
        # bones thicken more than they lengthen
        bone_width=growth * bio.slenderness * (0.86 + 0.14 * progress),
        cortex=0.2 + 0.1 * progress,
        density=0.78 + 0.22 * progress,
        plate_gap=1.1 * growth,
        joint_gap=(1.8 + 2.4 * (1.0 - progress)) * growth,
    )


@dataclass(frozen=True)
class _Epiphysis:
    """The ossification centre at one end of a long bone and its adult form."""

    end: str                  # "prox" or "dist": the end of the bone it caps
    state: StructureState
    thickness: float = 0.36   # adult thickness / metaphysis width
    squareness: float = 2.8   # superellipse power of the mature epiphysis
    width: float = 1.04       # mature width / metaphysis width


@dataclass(frozen=True)
class _LongBone:
    """A tubular bone from ``origin`` along the unit ``axis``, hand mm."""

    layer: int                          # bone layer of the canvas (0..2)
    origin: np.ndarray                  # (2,) mm, proximal end (epiphysis included)
    axis: np.ndarray                    # (2,) unit, proximal -> distal
    length: float                       # mm, epiphysis zone included
    widths: tuple[float, float, float]  # mm: proximal end, waist, distal end
    power: float                        # how sharply the ends flare
    density: float
    cortex: float                       # cortex thickness / width
    plate_gap: float                    # mm, open growth plate
    cap_free: float                     # bulge of the end without epiphysis / its width
    epiphysis: _Epiphysis | None
    tilt: float = 0.0                   # slant of the distal end (radius)


@dataclass(frozen=True)
class _Blob:
    """A carpal bone or the sesamoid: outline (and medulla) in hand mm."""

    layer: int
    outline: np.ndarray         # (n, 2) mm
    medulla: np.ndarray | None  # (n, 2) mm
    density: float


@dataclass(frozen=True)
class _RayLayout:
    """One laid-out ray: metacarpal, phalanges and the soft tissue of its digit."""

    bones: list[_LongBone]    # metacarpal, then the phalanges from base to tip
    head: np.ndarray          # (2,) mm, distal end of the metacarpal
    axis: np.ndarray          # (2,) unit axis of the metacarpal
    tissue_line: np.ndarray   # (n, 2) mm, centre line of the digit's soft tissue
    tissue_width: float       # mm
    tip_points: list[np.ndarray]  # 3 x (2,) mm: the fingertip pad, for framing


@dataclass
class _Hand:
    """Everything drawn for one film, in hand mm, in painting order."""

    bones: list[_LongBone]
    blobs: list[_Blob]
    fingers: list[tuple[np.ndarray, float]]  # soft-tissue centre lines and widths (mm)
    palm: np.ndarray    # (13, 2) mm, soft-tissue polygon
    arm: np.ndarray     # (4, 2) mm, soft-tissue polygon
    extent: np.ndarray  # (n, 2) mm, points the framing must show: tips, palm edge, wrist


def _forearm_length(growth: float) -> float:
    """mm of radius/ulna shaft below the wrist: enough to run out of any film."""
    return 140.0 * growth + 60.0


def _layout_forearm(m: _Maturity, bio: _Biology) -> list[_LongBone]:
    """Radius (layer 0) and ulna (layer 1), both with their epiphysis at the wrist."""
    g, wg = m.growth, m.bone_width
    forearm = _forearm_length(g)  # mm
    up = np.array([0.0, 1.0])
    radius = _LongBone(
        layer=0, origin=np.array([12.0 * g, -forearm]), axis=up, length=forearm,
        widths=(16 * wg, 15 * wg, 29 * wg), power=7.0, density=1.1 * m.density, cortex=0.34,
        plate_gap=m.plate_gap, cap_free=0.14,
        epiphysis=_Epiphysis("dist", m.states["radius"], thickness=0.32, squareness=2.6,
                             width=1.0),
        tilt=0.22,
    )
    ulna = _LongBone(
        layer=1, origin=np.array([-12.0 * g, -forearm]), axis=up,
        length=forearm + (bio.ulna_variance - 1.0) * g,
        widths=(12 * wg, 10.5 * wg, 15.5 * wg), power=7.0, density=1.05 * m.density,
        cortex=0.5, plate_gap=m.plate_gap, cap_free=0.0,
        epiphysis=_Epiphysis("dist", m.states["ulna"], thickness=0.5, squareness=2.2,
                             width=0.95),
    )
    return [radius, ulna]


def _layout_carpals(m: _Maturity, bio: _Biology) -> list[_Blob]:
    """The ossified carpals: dots that grow into packed polygons."""
    blobs = []
    for k, (name, carpal) in enumerate(_CARPAL_SHAPES.items()):
        state = m.states[name]
        if not state.present:
            continue
        radius_x, radius_y = carpal.radii
        # times the adult radii: growth x jitter x a dot growing to full size
        size = m.growth * bio.carpal_size[k] * (0.14 + 0.86 * state.stage**0.75)
        power = 2.0 + (carpal.squareness - 2.0) * state.stage  # round dot -> adult form
        outline = _superellipse(radius_x * size, radius_y * size, power, 20)
        rel_y = outline[:, 1] / max(radius_y * size, 1e-3)  # (20,) -1 proximal .. 1 distal
        if name == "hamate":  # wedge: narrower distally
            outline[:, 0] *= 1.0 - 0.25 * state.stage * rel_y
        elif name == "capitate":  # waist below a rounded head
            outline[:, 0] *= 1.0 - 0.12 * state.stage * np.exp(-(rel_y**2) * 6)
        outline = outline @ _rotation(carpal.rotation_deg).T
        centre = (np.array(carpal.centre) + bio.carpal_offset[k]) * m.growth  # (2,) mm
        blobs.append(_Blob(layer=carpal.layer, outline=outline + centre,
                           medulla=outline * 0.7 + centre, density=carpal.density * m.density))
    return blobs


def _layout_metacarpal(number: int, *, base: np.ndarray, axis: np.ndarray, length: float,
                       width: float, layer: int, m: _Maturity) -> _LongBone:
    """Metacarpal of ray ``number``: the thumb's has its epiphysis at the base, the
    others a big round one at the head."""
    if number == 1:
        profile = _TUBE_PROFILES["mc1"]
        epiphysis = _Epiphysis("prox", m.states["mc1"])
    else:
        profile = _TUBE_PROFILES["mc"]
        epiphysis = _Epiphysis("dist", m.states[f"mc{number}"], thickness=0.75, squareness=2.1,
                               width=1.12)
    return _LongBone(layer=layer, origin=base, axis=axis, length=length,
                     widths=profile.widths(width), power=profile.power, density=m.density,
                     cortex=m.cortex, plate_gap=m.plate_gap, cap_free=profile.cap,
                     epiphysis=epiphysis)


def _layout_phalanges(number: int, *, start: np.ndarray, angle_deg: float,
                      lengths: tuple[float, ...], width: float, layer: int, m: _Maturity,
                      pose: _Pose) -> tuple[list[_LongBone], np.ndarray, float]:
    """Phalanges of ray ``number`` from the joint at ``start`` (mm), each with its
    epiphysis at the base; the thumb has no middle phalanx.

    ``angle_deg`` is the digit's direction before the joint flexions; ``lengths`` the
    ray's (mc, pp, mp, dp) mm. Returns the bones, the fingertip (2,) mm and the
    direction of the distal phalanx (degrees).
    """
    thumb = number == 1
    kinds = ("pp", "dp") if thumb else ("pp", "mp", "dp")
    bone_lengths = (lengths[1], lengths[3]) if thumb else (lengths[1], lengths[2], lengths[3])
    scale = width * (1.1 if thumb else 1.0)  # the thumb's phalanges are stouter
    bones = []
    joint = start  # (2,) mm
    for j, (kind, length) in enumerate(zip(kinds, bone_lengths)):
        angle_deg += pose.flex_deg[number - 1, j]
        axis = _unit(angle_deg)
        profile = _TUBE_PROFILES[kind]
        bones.append(_LongBone(
            layer=layer, origin=joint.copy(), axis=axis, length=length,
            widths=profile.widths(scale), power=profile.power,
            density=m.density * (0.9 if kind == "dp" else 0.97), cortex=m.cortex,
            plate_gap=m.plate_gap, cap_free=profile.cap,
            epiphysis=_Epiphysis("prox", m.states[f"{kind}{number}"]),
        ))
        joint = joint + axis * (length + m.joint_gap)
    tip = joint + _unit(angle_deg) * (1.5 * m.growth)  # soft-tissue pad beyond the bone
    return bones, tip, angle_deg


def _layout_ray(number: int, m: _Maturity, bio: _Biology, pose: _Pose) -> _RayLayout:
    """Ray ``number`` (1 thumb .. 5 little finger): metacarpal, phalanges, soft tissue.

    Odd rays go to bone layer 1, even ones to layer 0, so neighbours add up.
    """
    ray = _RAYS[number]
    thumb = number == 1
    g = m.growth
    lengths = [x * g * bio.ray_length[number - 1] for x in ray.lengths]  # mm: mc, pp, mp, dp
    width = ray.width * bio.ray_width[number - 1] * m.bone_width  # factor on the profiles
    if thumb:  # the thumb turns on its own
        metacarpal_deg = ray.metacarpal_deg + pose.thumb_deg
    else:  # the metacarpals fan out a little with the spread
        metacarpal_deg = (ray.metacarpal_deg * (0.85 + 0.15 * pose.spread)
                          + pose.finger_deg[number - 1] * 0.3)
    base = np.array(ray.base) * g  # (2,) mm
    axis = _unit(metacarpal_deg)
    layer = 1 if number % 2 else 0
    metacarpal = _layout_metacarpal(number, base=base, axis=axis, length=lengths[0],
                                    width=width, layer=layer, m=m)
    head = base + axis * lengths[0]
    start = head + axis * m.joint_gap  # (2,) mm, base of the proximal phalanx
    digit_deg = (metacarpal_deg + (ray.abduction_deg * pose.spread if not thumb else 0.0)
                 + pose.finger_deg[number - 1])
    phalanges, tip, tip_deg = _layout_phalanges(number, start=start, angle_deg=digit_deg,
                                                lengths=lengths, width=width, layer=layer,
                                                m=m, pose=pose)

    # soft tissue: a thick line along the digit, a little wider than the proximal phalanx
    tissue_width = (2.0 * _TUBE_PROFILES["pp"].waist * width + 2.5 * g) * bio.tissue_thickness
    tip_axis = _unit(tip_deg)
    tip_points = [tip + tip_axis * tissue_width * 0.5,
                  tip + _normal(tip_axis) * tissue_width * 0.5,
                  tip - _normal(tip_axis) * tissue_width * 0.5]
    if thumb:  # the thumb's tissue reaches down its metacarpal
        tissue_line = np.stack([base + axis * lengths[0] * 0.45, head, start, tip])
        tissue_width = tissue_width * 1.08
    else:
        tissue_line = np.stack([head, start, tip])
    return _RayLayout(bones=[metacarpal, *phalanges], head=head, axis=axis,
                      tissue_line=tissue_line, tissue_width=tissue_width,
                      tip_points=tip_points)


def _layout_sesamoid(m: _Maturity, thumb: _RayLayout) -> list[_Blob]:
    """Adductor sesamoid (once ossified): ulnar side of the thumb metacarpal head,
    superimposed on it (layer 2)."""
    state = m.states["sesamoid"]
    if not state.present:
        return []
    g = m.growth
    radius = g * (0.6 + 2.4 * state.stage**0.7)  # mm
    centre = thumb.head - thumb.axis * (1.5 * g) - _normal(thumb.axis) * (3.2 * g)
    return [_Blob(layer=2, outline=_superellipse(radius, radius * 0.9, 2.0, 14) + centre,
                  medulla=None, density=0.8 * m.density)]


def _layout_palm(m: _Maturity, bio: _Biology, rays: dict[int, _RayLayout]) -> np.ndarray:
    """(13, 2) mm soft-tissue polygon around the metacarpals and the thenar web."""
    g, tw = m.growth, bio.tissue_thickness
    thumb_head, thumb_axis = rays[1].head, rays[1].axis
    index_head, index_axis = rays[2].head, rays[2].axis
    little_head, little_axis = rays[5].head, rays[5].axis
    thumb_normal, index_normal = _normal(thumb_axis), _normal(index_axis)
    little_normal = _normal(little_axis)
    # finger webs, little -> index: a third of the way up each adult proximal phalanx
    web = [rays[r].head + rays[r].axis * (0.3 * _RAYS[r].lengths[1] * g) for r in (5, 4, 3, 2)]
    return np.stack([
        np.array([-27.0 * tw, 10.0]) * g,
        np.array([-29.0 * tw, 40.0]) * g,
        little_head - little_normal * (8.0 * g * tw) - little_axis * (6.0 * g),
        web[0] - little_normal * (5.0 * g * tw),
        *web,
        index_head + index_axis * (2.0 * g) + index_normal * (6.0 * g * tw),
        thumb_head - thumb_axis * (4.0 * g) - thumb_normal * (7.0 * g * tw),
        thumb_head + thumb_normal * (8.0 * g * tw),
        thumb_head - thumb_axis * (30.0 * g) + thumb_normal * (9.0 * g * tw),
        np.array([30.0 * tw, 15.0]) * g,
        np.array([28.0 * tw, 0.0]) * g,
    ])


def _layout_arm(m: _Maturity, bio: _Biology) -> tuple[np.ndarray, np.ndarray]:
    """Forearm soft tissue: its (4, 2) mm polygon and a (2, 2) mm wrist line to frame."""
    g = m.growth
    half = 27.0 * g * bio.tissue_thickness  # mm, half the forearm width
    forearm = _forearm_length(g)
    arm = np.array([[-half, 12.0 * g], [-half * 0.95, -forearm - 80.0],
                    [half * 0.95, -forearm - 80.0], [half * 1.05, 12.0 * g]])
    wrist = np.array([[-half, -30.0 * g], [half, -30.0 * g]])
    return arm, wrist


def _layout_hand(age: float, male: bool, bio: _Biology, pose: _Pose) -> _Hand:
    """Every structure of the hand in mm for this bone age (months), sex, biology and pose.

    Painting order is part of the result (shapes on one uint8 layer overwrite each
    other): bones are forearm, then ray by ray (metacarpal, phalanges); blobs are the
    carpals, then the sesamoid.
    """
    m = _maturity(age, male, bio)
    rays = {number: _layout_ray(number, m, bio, pose) for number in range(1, _N_RAY + 1)}
    bones = _layout_forearm(m, bio)
    for ray in rays.values():
        bones += ray.bones
    blobs = _layout_carpals(m, bio) + _layout_sesamoid(m, rays[1])
    palm = _layout_palm(m, bio, rays)
    arm, wrist = _layout_arm(m, bio)
    tips = [point for ray in rays.values() for point in ray.tip_points]
    extent = np.concatenate([np.stack(tips), palm, wrist])
    fingers = [(ray.tissue_line, ray.tissue_width) for ray in rays.values()]
    return _Hand(bones, blobs, fingers, palm, arm, extent)


# --------------------------------------------------------------------------------------
# Painting: outlines onto the canvas layers
# --------------------------------------------------------------------------------------


def _epiphysis_outline(width: float, thickness: float, stage: float,
                       squareness: float) -> np.ndarray:
    """(22, 2) epiphysis outline in local (along, across) mm.

    +along points towards the joint; the origin is on its face towards the metaphysis.
    It starts as a round dot, flattens into a disc as wide as the metaphysis, then
    "caps" it: its rim bends over the metaphysis corners (stage 0.62 -> 1).
    """
    power = 2.0 + (squareness - 2.0) * min(1.0, stage * 1.6)  # round -> mature by 0.625
    outline = _superellipse(width / 2, thickness / 2, power, 22)
    outline = outline[:, ::-1].copy()  # (along, across)
    outline[:, 0] += thickness / 2
    cap = max(0.0, (stage - 0.62) / 0.38)  # 0 -> 1: how far the rim bends over
    if cap > 0:
        rim = np.clip(np.abs(outline[:, 1]) / (width / 2), 0, 1) ** 6  # (22,) 0 centre, 1 rim
        low = outline[:, 0] < thickness / 2  # the metaphysis side
        outline[low, 0] -= cap * 0.45 * thickness * rim[low]
    return outline


def _paint_long_bone(canvas: _Canvas, bone: _LongBone) -> None:
    """Shaft (cortex + medulla) and, once ossified, the epiphysis and growth plate.

    The epiphyseal zone (cartilage in the young) is reserved whatever the maturity; the
    ossified epiphysis sits in it, separated by the growth plate, which narrows before
    fusion and then leaves a dense scar line that fades over about two years.
    """
    proximal_w, waist_w, distal_w = bone.widths  # mm
    epiphysis = bone.epiphysis
    at_base = epiphysis is not None and epiphysis.end == "prox"
    metaphysis_w = proximal_w if at_base else distal_w  # mm, the end the epiphysis caps
    zone = epiphysis.thickness * metaphysis_w + bone.plate_gap if epiphysis else 0.0  # mm
    shaft_len = bone.length - zone  # mm
    shaft_origin = bone.origin + bone.axis * zone if at_base else bone.origin
    metaphysis_cap = -0.04 * metaphysis_w  # mm: a slightly concave face to the plate
    if epiphysis is None:
        caps = (0.12 * proximal_w, bone.cap_free * distal_w)
    elif at_base:
        caps = (metaphysis_cap, bone.cap_free * distal_w)
    else:
        caps = (0.12 * proximal_w, metaphysis_cap)
    outline = _tube_outline(shaft_len, widths=bone.widths, power=bone.power, caps=caps)
    if bone.tilt:
        # the distal radius slants: its styloid (thumb side) reaches further
        ramp = np.clip(outline[:, 0] / shaft_len, 0, 1) ** 8
        outline[:, 0] += bone.tilt * outline[:, 1] * ramp
    lumen = 1.0 - 2.0 * bone.cortex  # medulla width / bone width
    medulla_widths = (proximal_w * lumen * 0.9, waist_w * lumen, distal_w * lumen * 0.9)  # mm
    medulla = _tube_outline(shaft_len * 0.8, widths=medulla_widths, power=bone.power,
                            caps=(0.0, 0.0), samples=7)
    medulla[:, 0] += shaft_len * 0.1
    value = _BONE_VALUE * bone.density  # uint8 level
    canvas.draw_bone(bone.layer, outline, origin=shaft_origin, axis=bone.axis, value=value,
                     medulla=medulla, medulla_value=value * _MEDULLA)

    if epiphysis is None or not epiphysis.state.present:
        return
    state = epiphysis.state
    stage = state.stage
    grow = min(1.0, stage / 0.6)  # 0 -> 1: dot to full size over 60% of the stage
    epi_w = metaphysis_w * (0.2 + (epiphysis.width - 0.2) * grow**0.8)  # mm
    epi_t = min(epi_w, epiphysis.thickness * metaphysis_w * (0.35 + 0.65 * grow))  # mm
    if state.fused:  # the plate is bone: a slight overlap
        gap = -0.1 * bone.plate_gap
    elif stage > 0.8:  # the plate narrows before fusion
        gap = bone.plate_gap * (1.0 - stage) / 0.2
    else:  # a small centre floats in the middle of its cartilage
        gap = (bone.plate_gap
               + (1.0 - min(1.0, stage / 0.5)) * 0.5 * max(0.0, zone - epi_t - bone.plate_gap))
    shape = _epiphysis_outline(epi_w, epi_t, stage, epiphysis.squareness)
    if at_base:  # face: (2,) mm, middle of the epiphysis face towards the shaft
        face, sign = shaft_origin - bone.axis * gap, -1.0
    else:
        face, sign = shaft_origin + bone.axis * (shaft_len + gap), 1.0
    shape[:, 0] *= sign
    if bone.tilt:
        shape[:, 0] += bone.tilt * shape[:, 1] * (1.0 + 0.8 * shape[:, 1] / max(epi_w, 1e-3))
    epi_medulla = np.stack([shape[:, 0] * 0.6 + sign * epi_t * 0.2, shape[:, 1] * 0.72], 1)
    canvas.draw_bone(bone.layer, shape, origin=face, axis=bone.axis, value=value * 0.92,
                     medulla=epi_medulla, medulla_value=value * 0.8 * _MEDULLA)
    if state.fused and state.months_since_fusion < 36:
        # physeal scar: a thin dense line where the plate was (lift the medulla there)
        fade = math.exp(-state.months_since_fusion / 14.0)
        normal = _normal(bone.axis)
        half = 0.42 * metaphysis_w  # mm
        scar = np.stack([face - normal * half, face + normal * half])
        canvas.stroke(canvas.medulla_layers[bone.layer], scar,
                      value * _MEDULLA * (1.0 - 0.9 * fade), 0.5)


def _paint_hand(canvas: _Canvas, hand: _Hand) -> None:
    """Soft tissue, long bones, then carpals and sesamoid, in the hand's list order."""
    # soft tissue: thicker parts drawn brighter (fingers < palm < forearm)
    for line, width_mm in hand.fingers:
        canvas.stroke(canvas.tissue, line, 190, width_mm)
    canvas.fill(canvas.tissue, hand.palm, 235)
    canvas.fill(canvas.tissue, hand.arm, 240)
    for bone in hand.bones:
        _paint_long_bone(canvas, bone)
    for blob in hand.blobs:
        canvas.fill(canvas.bone_layers[blob.layer], blob.outline, _BONE_VALUE * blob.density)
        if blob.medulla is not None:
            canvas.fill(canvas.medulla_layers[blob.layer], blob.medulla,
                        _BONE_VALUE * blob.density * 0.8 * _MEDULLA)


# --------------------------------------------------------------------------------------
# Film: projection, exposure, plate, marker, noise
# --------------------------------------------------------------------------------------


@dataclass
class _FilmDraws:
    """Every random number of one film (see :func:`_draw_film` for the order).

    The nuisance vectors hold uniforms in [0, 1); the comments name their entries in
    index order ("?": compared with a threshold to switch something on or off).
    """

    biology: _Biology
    pose: _Pose
    cropped: bool          # film cropped to the hand (else a whole plate)
    placement: np.ndarray  # (6,) fill, magnification, rotation, x, y, (unused)
    plate: np.ndarray      # (6,) bright edge?, wide field rotation?, bright outside?,
    #                             edge brightness, (unused), (unused)
    field: np.ndarray      # (6,) width, height, rotation, x, y, outside level
    marker: np.ndarray     # (6,) shown?, size and block brightness, x, y, top or bottom?,
    #                             block?
    exposure: np.ndarray   # (8,) tissue contrast, bone contrast, compression, background,
    #                             span, gamma, heel ramp, (unused)
    detector: np.ndarray   # (3,) blur, noise amplitude, heel ramp?
    noise_seed: int        # seeds the trabecular texture, then the detector noise


def _draw_film(rng: np.random.Generator) -> _FilmDraws:
    """Draw everything random of one film. The order and count of the draws are fixed
    and do not depend on age or sex: do not reorder."""
    biology = _draw_biology(rng)
    pose = _draw_pose(rng)
    cropped = bool(rng.random() < 0.4)
    placement = rng.random(6)
    plate = rng.random(6)
    field = rng.random(6)
    marker = rng.random(6)
    exposure = rng.random(8)
    detector = rng.random(3)
    noise_seed = int(rng.integers(0, 2**31 - 1))
    return _FilmDraws(biology=biology, pose=pose, cropped=cropped, placement=placement,
                      plate=plate, field=field, marker=marker, exposure=exposure,
                      detector=detector, noise_seed=noise_seed)


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
    """Film ``i`` of the set ``seed``: age, sex, then the film, all from rng (seed, i)."""
    rng = np.random.default_rng([int(seed), int(i)])
    oldest = max(1, int(round(max_age_months)))  # months
    age = float(rng.integers(1, oldest + 1))
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
