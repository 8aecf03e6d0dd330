"""Greulich & Pyle standard deviations of skeletal age, and the delayed/normal/advanced call.

A bone age a year off is normal at 14 but far outside the normal range at 2, so the call
must use the spread of skeletal age among healthy children of that chronological age.

Source: W. W. Greulich and S. I. Pyle, *Radiographic Atlas of Skeletal Development of the
Hand and Wrist*, 2nd edition, Stanford University Press, 1959: the table of standard
deviations of skeletal age (months) at each chronological age, from the Brush Foundation
Study of healthy Cleveland children (boys 3 months to 17 years, girls 3 months to 16 years).
The values below are as reproduced in published bone-age software that plots the Brush
Foundation +-2 SD band; between table ages the SD is interpolated linearly, and outside the
table the nearest end value is used.

Rule: bone age more than 2 SD below chronological age is "delayed", more than 2 SD above is
"advanced", otherwise "normal" (the usual clinical threshold, e.g. for referral).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SOURCE = ("Greulich & Pyle, Radiographic Atlas of Skeletal Development of the Hand and Wrist, "
          "2nd ed. (1959), Brush Foundation standard deviations")
SD_LIMIT = 2.0
RULE = (f"delayed/advanced when bone age differs from chronological age by more than "
        f"{SD_LIMIT:g} SD ({SOURCE}, SD for the child's age and sex)")

_AGES_YEARS = [0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9, 10, 11, 12, 13,
               14, 15, 16, 17]
# Standard deviation of skeletal age (months) at each chronological age above.
_SD_MONTHS = {
    1: [0.69, 1.13, 1.43, 1.97, 3.52, 3.92, 4.52, 5.08, 5.40, 6.66, 8.36, 8.79, 9.17, 8.91,
        9.10, 9.00, 9.79, 10.09, 10.38, 10.44, 10.72, 11.32, 12.86, 13.05],  # boys
    0: [0.72, 1.16, 1.36, 1.77, 3.49, 4.64, 5.37, 5.97, 7.48, 8.98, 10.73, 11.65, 10.23, 9.64,
        10.23, 10.74, 11.73, 11.94, 10.24, 10.67, 11.30, 9.23, 7.31],  # girls (to 16 years)
}


def standard_deviation(chronological_months: float, male: int) -> float:
    """G&P standard deviation (months) of skeletal age for a child of this age and sex."""
    sds = _SD_MONTHS[int(bool(male))]
    ages = np.asarray(_AGES_YEARS[:len(sds)]) * 12.0
    return float(np.interp(chronological_months, ages, sds))


@dataclass(frozen=True)
class Assessment:
    """Bone age against chronological age: the difference, in months and in SDs, and the call."""

    difference_months: float  # bone age - chronological age
    sd_months: float
    z: float
    call: str  # delayed | normal | advanced

    def to_dict(self) -> dict:
        return {"difference_months": round(self.difference_months, 1),
                "sd_months": round(self.sd_months, 2), "z_score": round(self.z, 2),
                "call": self.call, "rule": RULE}


def assess(bone_age_months: float, chronological_months: float, male: int) -> Assessment:
    """Call a bone age delayed, normal or advanced for the child's age and sex (2 SD rule)."""
    sd = standard_deviation(chronological_months, male)
    difference = bone_age_months - chronological_months
    z = difference / sd
    call = "delayed" if z < -SD_LIMIT else "advanced" if z > SD_LIMIT else "normal"
    return Assessment(difference, sd, z, call)
