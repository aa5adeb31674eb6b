"""Report aggregation: facts in, rows grouped by the dimensions a ministry asks for.

A fact is the roll-up of one (month, allocation, site, GPU type) with the allocation's
attributes already resolved (programme, applicant type, organisation, strategic field);
grouping them by any subset of dimensions is then a pure fold that tests can check against
figures computed independently from the raw ledger.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from gpucenter.accounting.rates import RateBook, fiscal_year_of_month, value
from gpucenter.domain.messages import msg


class Dimension(StrEnum):
    MONTH = "month"
    PROGRAMME = "programme"
    APPLICANT_TYPE = "applicant_type"
    ORGANISATION = "organisation"
    STRATEGIC_FIELD = "strategic_field"
    SITE = "site"
    GPU_TYPE = "gpu_type"
    PROJECT = "project"
    CALL = "call"


NONE_LABEL = "(none)"


@dataclass(frozen=True, slots=True)
class Fact:
    month: str
    programme: str
    applicant_type: str
    organisation: str
    strategic_field: str
    site: str
    gpu_type: str
    project: str
    call: str
    gpu_seconds: float
    entries: int

    def key(self, dims: Sequence[Dimension]) -> tuple[str, ...]:
        return tuple(str(getattr(self, d.value)) for d in dims)


@dataclass(frozen=True, slots=True)
class ReportRow:
    key: dict[str, str]
    gpu_hours: float
    normalised_gpu_hours: float
    value_krw: float
    entries: int

    def flat(self) -> dict[str, object]:
        """One flat record for CSV, XLSX and JSON alike."""
        return {
            **self.key,
            "gpu_hours": round(self.gpu_hours, 6),
            "normalised_gpu_hours": round(self.normalised_gpu_hours, 6),
            "value_krw": round(self.value_krw, 2),
            "entries": self.entries,
        }


def parse_dimensions(names: Iterable[str]) -> list[Dimension]:
    from gpucenter.domain.errors import ValidationError

    dims: list[Dimension] = []
    for name in names:
        try:
            dims.append(Dimension(name.strip()))
        except ValueError:
            allowed = ", ".join(d.value for d in Dimension)
            raise ValidationError.about(
                "by", msg("error.unknown_dimension", name=repr(name), allowed=allowed)
            ) from None
    return dims


def aggregate(facts: Iterable[Fact], dims: Sequence[Dimension], book: RateBook) -> list[ReportRow]:
    """Group facts by `dims`, valuing each at its month's fiscal-year rate card.

    Valuation happens per fact (each carries one month and one GPU type), never on a sum
    across types or years, so that mixed groups are still priced right.
    """
    sums: dict[tuple[str, ...], list[float]] = {}
    for f in facts:
        v = value(f.gpu_seconds, f.gpu_type, fiscal_year_of_month(f.month), book)
        acc = sums.setdefault(f.key(dims), [0.0, 0.0, 0.0, 0.0])
        acc[0] += v.gpu_hours
        acc[1] += v.normalised_gpu_hours
        acc[2] += v.value_krw
        acc[3] += f.entries
    return [
        ReportRow(dict(zip([d.value for d in dims], k, strict=True)), a[0], a[1], a[2], int(a[3]))
        for k, a in sorted(sums.items())
    ]


@dataclass(frozen=True, slots=True)
class ShareRow:
    """Delivered GPU-hours of one share rule's applicant types against its floor/ceiling."""

    rule: str
    applicant_types: tuple[str, ...]
    delivered_gpu_hours: float
    delivered_share: float
    min_share: float | None
    max_share: float | None

    @property
    def within(self) -> bool:
        low = self.min_share is None or self.delivered_share >= self.min_share - 1e-9
        high = self.max_share is None or self.delivered_share <= self.max_share + 1e-9
        return low and high


def shares(
    delivered: Mapping[str, float],
    rules: Sequence[tuple[str, Sequence[str], float | None, float | None]],
) -> list[ShareRow]:
    """For each (name, applicant types, min, max) rule: the share of delivered GPU-hours
    its types received, next to what the call's policy promised them."""
    total = sum(delivered.values())
    out: list[ShareRow] = []
    for name, types, low, high in rules:
        got = sum(delivered.get(t, 0.0) for t in types)
        out.append(
            ShareRow(name, tuple(sorted(types)), got, got / total if total > 0 else 0.0, low, high)
        )
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100.0 * len(ordered))))
    return ordered[rank - 1]
