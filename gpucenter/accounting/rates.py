"""Rate cards and valuation: GPU-seconds become GPU-hours, normalised GPU-hours and KRW.

A charge is valued at the rate card of the fiscal year it was made in (the Korean government
fiscal year is the calendar year), so that last year's report does not change when this
year's prices do. Normalised GPU-hours weigh each type by its billing weight (an H100 hour
might count 1.0, a B200 hour 2.0) so that awards and usage compare across types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import msg


@dataclass(frozen=True, slots=True)
class RateCard:
    """The price of one GPU-hour of `gpu_type` in `fiscal_year`, and its billing weight."""

    fiscal_year: int
    gpu_type: str
    krw_per_gpu_hour: float
    billing_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.krw_per_gpu_hour < 0:
            raise ValidationError.about("krw_per_gpu_hour", msg("error.not_negative"))
        if self.billing_weight <= 0:
            raise ValidationError.about("billing_weight", msg("error.more_than_zero"))
        if not 2000 <= self.fiscal_year <= 2100:
            raise ValidationError.about("fiscal_year", msg("error.fiscal_year_range"))


# A type without a card is weighed 1.0 and priced 0 KRW: the report still counts its hours,
# and the missing price shows as a zero rather than as a crash in a ministry's export.
UNPRICED = 0.0

RateBook = Mapping[tuple[int, str], RateCard]


def fiscal_year(at: datetime) -> int:
    """The fiscal year of an instant (calendar year, in UTC)."""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).year


def fiscal_year_of_month(month: str) -> int:
    """The fiscal year of a month key such as '2026-11'."""
    return int(month[:4])


def month_key(at: datetime) -> str:
    """'YYYY-MM' in UTC: the key of the monthly roll-up and of every monthly report."""
    utc = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    return f"{utc.year:04d}-{utc.month:02d}"


@dataclass(frozen=True, slots=True)
class Valuation:
    gpu_hours: float
    normalised_gpu_hours: float
    value_krw: float


def value(gpu_seconds: float, gpu_type: str, year: int, book: RateBook) -> Valuation:
    """Value `gpu_seconds` of `gpu_type` charged in fiscal `year` with the rate book."""
    hours = gpu_seconds / 3600.0
    card = book.get((year, gpu_type))
    if card is None:
        return Valuation(hours, hours, UNPRICED)
    return Valuation(hours, hours * card.billing_weight, hours * card.krw_per_gpu_hour)


def month_range(first: str, last: str) -> list[str]:
    """Every month key from `first` to `last` inclusive."""
    for label in (first, last):
        if len(label) != 7 or label[4] != "-" or not (1 <= int(label[5:]) <= 12):
            raise ValidationError.about("month", msg("error.month_form", got=repr(label)))
    y, m = int(first[:4]), int(first[5:])
    end = (int(last[:4]), int(last[5:]))
    out: list[str] = []
    while (y, m) <= end:
        out.append(f"{y:04d}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[start, end) of a month key in UTC."""
    y, m = int(month[:4]), int(month[5:])
    start = datetime(y, m, 1, tzinfo=UTC)
    end = datetime(y + 1, 1, 1, tzinfo=UTC) if m == 12 else datetime(y, m + 1, 1, tzinfo=UTC)
    return start, end
