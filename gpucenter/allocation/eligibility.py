"""Whether an application may be submitted to a call: checked once, at submission, with errors
that name the field and say what would be accepted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gpucenter.allocation.model import (
    STRATEGIC_TECHNOLOGIES,
    ApplicantType,
    AwardKind,
    BatchItem,
    LeaseItem,
    overlap_hours,
    quarter_bounds,
)
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import At, Num, msg


@dataclass(frozen=True, slots=True)
class CallRules:
    """What a call admits."""

    opens_at: datetime
    closes_at: datetime
    eligible_types: frozenset[ApplicantType]
    gpu_types: frozenset[str]
    periods: frozenset[str]
    award_kinds: frozenset[AwardKind] = frozenset(AwardKind)
    max_gpu_hours: float | None = None  # per application
    max_lease_gpus: int | None = None
    taxonomy: tuple[str, ...] = STRATEGIC_TECHNOLOGIES


@dataclass(frozen=True, slots=True)
class Submission:
    applicant_type: str
    kind: AwardKind
    batch: tuple[BatchItem, ...]
    lease: LeaseItem | None
    min_gpu_hours: float
    tags: tuple[str, ...]
    region: str


def check_submission(rules: CallRules, sub: Submission, now: datetime) -> None:
    """Raise ValidationError (or nothing) for one application against its call's rules."""
    if now < rules.opens_at:
        raise ValidationError.about("call", msg("error.call_not_open", at=_at(rules.opens_at)))
    if now >= rules.closes_at:
        raise ValidationError.about("call", msg("error.call_closed", at=_at(rules.closes_at)))
    try:
        kind = ApplicantType(sub.applicant_type)
    except ValueError:
        raise ValidationError.about(
            "organisation", msg("error.applicant_type_unknown", kind=repr(sub.applicant_type))
        ) from None
    if kind not in rules.eligible_types:
        allowed = ", ".join(sorted(t.value for t in rules.eligible_types))
        raise ValidationError.about(
            "organisation", msg("error.applicant_not_eligible", kind=kind.value, allowed=allowed)
        )
    if sub.kind not in rules.award_kinds:
        raise ValidationError.about(
            "kind", msg("error.award_kind_not_offered", kind=sub.kind.value)
        )
    if not sub.region.strip():
        raise ValidationError.about("region", msg("error.region_missing"))
    _check_tags(rules.taxonomy, sub.tags)
    if sub.kind is AwardKind.LEASE:
        _check_lease(rules, sub.lease)
        return
    if not sub.batch:
        raise ValidationError.about("requests", msg("error.requests_empty"))
    seen: set[tuple[str, str]] = set()
    for item in sub.batch:
        _check_type(rules, item.gpu_type, "requests.gpu_type")
        if item.period not in rules.periods:
            allowed = ", ".join(sorted(rules.periods))
            raise ValidationError.about(
                "requests.period",
                msg("error.period_not_offered", period=item.period, allowed=allowed),
            )
        if (item.gpu_type, item.period) in seen:
            raise ValidationError.about(
                "requests",
                msg("error.request_twice", gpu_type=item.gpu_type, period=item.period),
            )
        seen.add((item.gpu_type, item.period))
    total = sum(i.gpu_hours for i in sub.batch)
    if rules.max_gpu_hours is not None and total > rules.max_gpu_hours:
        raise ValidationError.about(
            "requests",
            msg("error.over_call_limit", total=Num(total, 0), limit=Num(rules.max_gpu_hours, 0)),
        )
    if not 0 < sub.min_gpu_hours <= total:
        raise ValidationError.about(
            "min_gpu_hours", msg("error.min_gpu_hours", total=Num(total, 0))
        )


def _at(when: datetime) -> At:
    """An instant of a call's timetable, shown in the reader's zone (a naive time is UTC)."""
    return At((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())


def _check_type(rules: CallRules, gpu_type: str, field: str) -> None:
    if gpu_type not in rules.gpu_types:
        allowed = ", ".join(sorted(rules.gpu_types))
        raise ValidationError.about(
            field, msg("error.gpu_type_not_offered", gpu_type=gpu_type, allowed=allowed)
        )


def _check_tags(taxonomy: Sequence[str], tags: Sequence[str]) -> None:
    unknown = [t for t in tags if t not in taxonomy]
    if unknown:
        raise ValidationError.about(
            "tags", msg("error.tags_unknown", tags=", ".join(unknown), allowed=", ".join(taxonomy))
        )


def _check_lease(rules: CallRules, lease: LeaseItem | None) -> None:
    if lease is None:
        raise ValidationError.about("lease", msg("error.lease_incomplete"))
    _check_type(rules, lease.gpu_type, "lease.gpu_type")
    if rules.max_lease_gpus is not None and lease.gpus > rules.max_lease_gpus:
        raise ValidationError.about(
            "lease.gpus", msg("error.lease_too_many_gpus", limit=rules.max_lease_gpus)
        )
    inside = sum(overlap_hours(lease.start, lease.end, p) for p in rules.periods)
    if inside + 1e-6 < lease.hours:
        first = min(quarter_bounds(p)[0] for p in rules.periods)
        last = max(quarter_bounds(p)[1] for p in rules.periods)
        raise ValidationError.about(
            "lease.starts_at",
            msg("error.lease_outside_periods", first=f"{first:%Y-%m-%d}", last=f"{last:%Y-%m-%d}"),
        )
    if rules.max_gpu_hours is not None and lease.gpus * lease.hours > rules.max_gpu_hours:
        raise ValidationError.about(
            "lease.gpus",
            msg(
                "error.over_call_limit",
                total=Num(lease.gpus * lease.hours, 0),
                limit=Num(rules.max_gpu_hours, 0),
            ),
        )
