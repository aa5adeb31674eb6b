"""The vocabulary of allocation programmes: applicant types, periods, requests and policy.

Everything here is a frozen value with no I/O, so that eligibility, review and the award
optimiser are pure functions that tests (and what-if runs) can call with hand-built inputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import msg


class ApplicantType(StrEnum):
    """The organisation kinds a call may admit (same values as the accounts service's)."""

    PUBLIC_RESEARCH_INSTITUTE = "public_research_institute"
    UNIVERSITY = "university"
    STARTUP = "startup"
    SME = "sme"
    LARGE_ENTERPRISE = "large_enterprise"
    GOVERNMENT = "government"


class Sector(StrEnum):
    """The coarse split ministries report on (2026: ~2,600 academia / 1,300 industry / 300 RI)."""

    ACADEMIA = "academia"
    INDUSTRY = "industry"
    RESEARCH_INSTITUTE = "research_institute"
    GOVERNMENT = "government"


SECTOR_OF: Mapping[ApplicantType, Sector] = {
    ApplicantType.UNIVERSITY: Sector.ACADEMIA,
    ApplicantType.STARTUP: Sector.INDUSTRY,
    ApplicantType.SME: Sector.INDUSTRY,
    ApplicantType.LARGE_ENTERPRISE: Sector.INDUSTRY,
    ApplicantType.PUBLIC_RESEARCH_INSTITUTE: Sector.RESEARCH_INSTITUTE,
    ApplicantType.GOVERNMENT: Sector.GOVERNMENT,
}


class CallState(StrEnum):
    """A call's stored state: open for applications (until its closing time, when the portal
    shows it closed and in review), then decided once its awards are made."""

    OPEN = "open"
    DECIDED = "decided"


class ApplicationState(StrEnum):
    """An application's life: a draft, submitted for review, then awarded or not selected;
    the applicant may withdraw it before the decision."""

    DRAFT = "draft"
    SUBMITTED = "submitted"
    WITHDRAWN = "withdrawn"
    AWARDED = "awarded"
    REJECTED = "rejected"
    # Not awarded at the decision but ranked on the call's reserve list: the next in line
    # when an award is declined, lapses or is reclaimed (then AWARDED, or REJECTED when the
    # reserve list is closed).
    RESERVE = "reserve"


class LeaseState(StrEnum):
    """A dedicated lease's state (a lease is active over its window; its end is its time).
    PENDING until its award's agreement is in force; WITHDRAWN when the offer was declined
    or lapsed. Only active leases are reservations the scheduler honours."""

    ACTIVE = "active"
    PENDING = "pending"
    WITHDRAWN = "withdrawn"


class AwardKind(StrEnum):
    """GPU-hours for batch jobs, or a dedicated lease of N GPUs of a type for a window."""

    GPU_HOURS = "gpu_hours"
    LEASE = "lease"


# The twelve national strategic technology fields: the default tag taxonomy of a call.
STRATEGIC_TECHNOLOGIES: tuple[str, ...] = (
    "semiconductors_displays",
    "secondary_batteries",
    "advanced_mobility",
    "next_generation_nuclear",
    "advanced_biotechnology",
    "aerospace_ocean",
    "hydrogen",
    "cybersecurity",
    "artificial_intelligence",
    "next_generation_communications",
    "advanced_robotics_manufacturing",
    "quantum",
)

# Seoul, Incheon and Gyeonggi: applicants elsewhere may get the regional score bonus.
CAPITAL_REGIONS: tuple[str, ...] = ("seoul", "incheon", "gyeonggi")

_QUARTER = re.compile(r"^(\d{4})Q([1-4])$")


def quarter_bounds(period: str) -> tuple[datetime, datetime]:
    """[start, end) of a quarter label such as '2026Q3', in UTC."""
    m = _QUARTER.match(period)
    if not m:
        raise ValidationError.about("period", msg("error.period_format", period=repr(period)))
    year, q = int(m.group(1)), int(m.group(2))
    start = datetime(year, 3 * (q - 1) + 1, 1, tzinfo=UTC)
    end = (
        datetime(year + 1, 1, 1, tzinfo=UTC) if q == 4 else datetime(year, 3 * q + 1, 1, tzinfo=UTC)
    )
    return start, end


def quarter_hours(period: str) -> float:
    start, end = quarter_bounds(period)
    return (end - start).total_seconds() / 3600


def overlap_hours(start: datetime, end: datetime, period: str) -> float:
    """Hours of [start, end) that fall inside the quarter `period`."""
    q_start, q_end = quarter_bounds(period)
    lo, hi = max(start, q_start), min(end, q_end)
    return max(0.0, (hi - lo).total_seconds() / 3600)


Cell = tuple[str, str]
"""A capacity pool key: (gpu_type, quarter)."""


@dataclass(frozen=True, slots=True)
class BatchItem:
    """GPU-hours of one GPU type in one quarter."""

    gpu_type: str
    period: str
    gpu_hours: float

    def __post_init__(self) -> None:
        quarter_bounds(self.period)
        if not self.gpu_hours > 0:
            raise ValidationError.about("requests.gpu_hours", msg("error.value_positive"))


@dataclass(frozen=True, slots=True)
class LeaseItem:
    """N dedicated GPUs of a type at a site for [start, end); the award may be fewer GPUs."""

    gpu_type: str
    gpus: int
    min_gpus: int
    start: datetime
    end: datetime
    site: str = ""

    def __post_init__(self) -> None:
        if self.gpus < 1:
            raise ValidationError.about("lease.gpus", msg("error.value_at_least", low=1))
        if not 1 <= self.min_gpus <= self.gpus:
            raise ValidationError.about("lease.min_gpus", msg("error.lease_min_gpus"))
        if self.end <= self.start:
            raise ValidationError.about("lease.ends_at", msg("error.lease_end_before_start"))

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600


@dataclass(frozen=True, slots=True)
class Candidate:
    """One submitted application as the optimiser sees it.

    `score` is the final normalised review score including any regional bonus. For GPU-hours
    awards `min_gpu_hours` is the smallest total still useful; a lease's minimum is its
    `min_gpus` held for the whole window.
    """

    app_id: int
    organisation: str
    applicant_type: ApplicantType
    score: float
    kind: AwardKind = AwardKind.GPU_HOURS
    batch: tuple[BatchItem, ...] = ()
    lease: LeaseItem | None = None
    min_gpu_hours: float = 0.0

    def __post_init__(self) -> None:
        if self.kind is AwardKind.LEASE and (self.lease is None or self.batch):
            raise ValidationError.about("lease", msg("error.lease_exactly_one"))
        if self.kind is AwardKind.GPU_HOURS and (self.lease is not None or not self.batch):
            raise ValidationError.about("requests", msg("error.requests_needed"))

    @property
    def requested_gpu_hours(self) -> float:
        if self.lease is not None:
            return self.lease.gpus * self.lease.hours
        return sum(b.gpu_hours for b in self.batch)

    @property
    def useful_minimum(self) -> float:
        """GPU-hours below which an award is worthless (and so must be zero)."""
        if self.lease is not None:
            return self.lease.min_gpus * self.lease.hours
        return self.min_gpu_hours


@dataclass(frozen=True, slots=True)
class ShareRule:
    """A floor and/or ceiling on the share of awarded GPU-hours going to some applicant types.

    Example: ShareRule("startups_smes", {STARTUP, SME}, min_share=0.30).
    """

    name: str
    applicant_types: frozenset[ApplicantType]
    min_share: float | None = None
    max_share: float | None = None

    def __post_init__(self) -> None:
        if not self.applicant_types:
            raise ValidationError.about("shares.applicant_types", msg("error.shares_types_missing"))
        for label, v in (("min_share", self.min_share), ("max_share", self.max_share)):
            if v is not None and not 0 <= v <= 1:
                raise ValidationError.about(
                    f"shares.{label}", msg("error.value_between", low=0, high=1)
                )
        if (
            self.min_share is not None
            and self.max_share is not None
            and self.min_share > self.max_share
        ):
            raise ValidationError.about("shares.min_share", msg("error.min_share_over_max"))


@dataclass(frozen=True, slots=True)
class AwardPolicy:
    """What a programme manager sets for a call's award round."""

    shares: tuple[ShareRule, ...] = ()
    # Cap per organisation, as a share of the call's total GPU-hours capacity.
    org_cap_share: float | None = None
    # Multiplier bonus (0.1 = +10%) on the score of applicants outside the capital region.
    regional_bonus: float = 0.0
    capital_regions: tuple[str, ...] = CAPITAL_REGIONS
    # Applications scoring below this never get an award, whatever capacity is left.
    min_score: float = 0.0

    def __post_init__(self) -> None:
        if self.org_cap_share is not None and not 0 < self.org_cap_share <= 1:
            raise ValidationError.about("org_cap_share", msg("error.value_fraction"))
        if not 0 <= self.regional_bonus <= 1:
            raise ValidationError.about("regional_bonus", msg("error.value_between", low=0, high=1))
        floors = sum(r.min_share or 0.0 for r in self.shares)
        if floors > 1 + 1e-9:
            raise ValidationError.about("shares", msg("error.min_shares_over_total"))

    def final_score(self, normalised: float, region: str) -> float:
        """The normalised review score with the regional bonus applied."""
        outside = region.strip().lower() not in self.capital_regions
        return normalised * (1 + self.regional_bonus) if outside else normalised


@dataclass(frozen=True, slots=True)
class Committed:
    """Awards already standing that a round must live with.

    Why: freed capacity (a decline, a lapse, a reclaim) is re-offered down the reserve list
    by the same optimiser under the same shares and caps. The standing awards are not
    candidates (nobody may take from them), but they use capacity, count towards their
    organisation's cap and weigh in every share, so the round sees them as constants.
    `leases` are standing leases as (gpu_type, start, end, gpus), start and end in epoch s.
    """

    by_cell: Mapping[Cell, float] = field(default_factory=dict)
    by_org: Mapping[str, float] = field(default_factory=dict)
    by_type: Mapping[ApplicantType, float] = field(default_factory=dict)
    leases: tuple[tuple[str, float, float, int], ...] = ()

    @property
    def total(self) -> float:
        return float(sum(self.by_type.values()))

    def held_at(self, gpu_type: str, instant: float) -> int:
        """GPUs of `gpu_type` standing leases hold at `instant`."""
        return sum(g for t, a, b, g in self.leases if t == gpu_type and a <= instant < b)


@dataclass(frozen=True, slots=True)
class AwardProblem:
    """Everything the optimiser needs: capacity, policy and the candidates."""

    capacity: Mapping[Cell, float]
    candidates: tuple[Candidate, ...]
    policy: AwardPolicy = field(default_factory=AwardPolicy)
    # Physical GPUs per type, for leases held at the same time (omit: GPU-hours only).
    gpus: Mapping[str, int] = field(default_factory=dict)
    # Standing awards (a re-offer round); empty for a call's first round.
    committed: Committed = field(default_factory=Committed)

    def room(self, cell: Cell) -> float:
        """GPU-hours of `cell` not held by standing awards."""
        return max(0.0, self.capacity.get(cell, 0.0) - self.committed.by_cell.get(cell, 0.0))

    @property
    def total_capacity(self) -> float:
        return float(sum(self.capacity.values()))

    @property
    def org_cap(self) -> float | None:
        share = self.policy.org_cap_share
        return None if share is None else share * self.total_capacity


@dataclass(frozen=True, slots=True)
class Award:
    """What one application gets: GPU-hours by cell, or a number of leased GPUs."""

    app_id: int
    gpu_hours: Mapping[Cell, float]
    lease_gpus: int = 0

    @property
    def total(self) -> float:
        return float(sum(self.gpu_hours.values()))
