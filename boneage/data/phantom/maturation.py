"""Maturation timing: when each structure ossifies, matures and fuses, by sex.

:data:`TIMELINE` holds the appearance, maturity and fusion ages (months) of every drawn
structure, girls on their own, earlier timeline; :func:`structure_states` turns it into a
:class:`StructureState` per structure at one bone age (with a film's jitter), and
:func:`hand_growth` gives the hand's length against age.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
