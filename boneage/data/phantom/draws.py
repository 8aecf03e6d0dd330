"""Every random number of one film, drawn in a fixed order and count.

:func:`_draw_film` is the one consumer of a film's rng: the biology (per-structure timing
jitter, proportions, maturity shift; :func:`_draw_biology`), the pose (finger spread,
joint angles; :func:`_draw_pose`), then the framing, plate, marker, exposure and detector
nuisances and the seed of the texture and noise. The draws do not depend on age or sex;
reordering them changes every film.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from boneage.data.phantom.anatomy import _N_CARPAL, _N_RAY
from boneage.data.phantom.maturation import _STRUCTURE_NAMES, TIMELINE


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
