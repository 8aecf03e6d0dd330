"""Layout: every structure of one film's hand as outlines in hand mm.

From bone age, sex, biology and pose: the whole-hand maturity (:class:`_Maturity`: growth,
bone width, density, growth-plate and joint gaps), then the forearm, carpals, one ray per
digit, the thumb's sesamoid and the soft tissue (palm, arm), collected in a :class:`_Hand`
in painting order by :func:`_layout_hand`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from boneage.data.phantom.anatomy import _CARPAL_SHAPES, _N_RAY, _RAYS, _TUBE_PROFILES
from boneage.data.phantom.draws import _Biology, _Pose
from boneage.data.phantom.geometry import _normal, _rotation, _superellipse, _unit
from boneage.data.phantom.maturation import StructureState, hand_growth, structure_states


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
