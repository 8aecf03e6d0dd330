"""Clinical wording of ages: months and 'N years M months', and parsing of typed ages.

Radiologists write bone age as years and months; researchers compute in months.
Every output a person reads gives both.
"""

from __future__ import annotations

import re

from boneage.kernel.errors import UsageError

_AGE_PATTERN = re.compile(
    r"^\s*(?:(?P<years>\d+(?:\.\d+)?)\s*(?:y|yr|yrs|year|years))?\s*"
    r"(?:(?P<months>\d+(?:\.\d+)?)\s*(?:m|mo|mos|month|months)?)?\s*$",
    re.IGNORECASE,
)


def years_months(months: float) -> tuple[int, int]:
    """Whole years and the remaining whole months (rounded to the nearest month)."""
    total = int(round(abs(months)))
    return total // 12, total % 12


def format_months(months: float) -> str:
    """``125.4`` -> ``'10 years 5 months'``; negative values get a leading minus."""
    years, rest = years_months(months)
    sign = "-" if months < 0 and (years or rest) else ""
    year_word = "year" if years == 1 else "years"
    month_word = "month" if rest == 1 else "months"
    if years == 0:
        return f"{sign}{rest} {month_word}"
    return f"{sign}{years} {year_word} {rest} {month_word}"


def describe(months: float) -> str:
    """``'125.4 months (10 years 5 months)'``."""
    return f"{months:.1f} months ({format_months(months)})"


def parse_age(text: str | float | int) -> float:
    """Parse '122', '10y2m', '10 years 2 months', '10y' or '7.5y' into months, 0 to 300."""
    months = read_months(text)
    if not 0 <= months <= 300:
        raise UsageError(f"age {text!r} is {months:g} months, outside 0..300")
    return months


def read_months(text: str | float | int) -> float:
    """:func:`parse_age` without its range: the caller checks the range it means (and says
    which), so '300y' is not said to be outside some other range than the one that applies."""
    if isinstance(text, (int, float)):
        months = float(text)
    else:
        match = _AGE_PATTERN.match(str(text))
        if not match or not (match.group("years") or match.group("months")):
            raise UsageError(f"cannot read age {text!r}; write months (122) or years and "
                             "months (10y2m)")
        months = float(match.group("years") or 0) * 12 + float(match.group("months") or 0)
        if match.group("years") and match.group("months") and float(match.group("months")) >= 12:
            # '10y15m' is a slip, not 11 years 3 months: say so rather than guess
            raise UsageError(f"cannot read age {text!r}: months must be 0-11 when years are "
                             f"given (did you mean {months // 12:g}y{months % 12:g}m, or "
                             f"{months:g} months?)")
    return months
