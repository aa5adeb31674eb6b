"""Whether an application may be submitted to a call: checked once, at submission, with errors
that name the field and say what would be accepted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

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
        raise ValidationError("call", f"the call opens at {rules.opens_at:%Y-%m-%d %H:%M} UTC")
    if now >= rules.closes_at:
        raise ValidationError(
            "call", f"the call closed at {rules.closes_at:%Y-%m-%d %H:%M} UTC; it is too late"
        )
    try:
        kind = ApplicantType(sub.applicant_type)
    except ValueError:
        raise ValidationError(
            "organisation", f"organisation kind {sub.applicant_type!r} is not an applicant type"
        ) from None
    if kind not in rules.eligible_types:
        allowed = ", ".join(sorted(t.value for t in rules.eligible_types))
        raise ValidationError(
            "organisation", f"a {kind.value} is not eligible for this call (open to: {allowed})"
        )
    if sub.kind not in rules.award_kinds:
        raise ValidationError("kind", f"this call does not award {sub.kind.value}")
    if not sub.region.strip():
        raise ValidationError("region", "give the organisation's region (e.g. busan)")
    _check_tags(rules.taxonomy, sub.tags)
    if sub.kind is AwardKind.LEASE:
        _check_lease(rules, sub.lease)
        return
    if not sub.batch:
        raise ValidationError("requests", "ask for GPU-hours of at least one GPU type and period")
    seen: set[tuple[str, str]] = set()
    for item in sub.batch:
        _check_type(rules, item.gpu_type, "requests.gpu_type")
        if item.period not in rules.periods:
            allowed = ", ".join(sorted(rules.periods))
            raise ValidationError("requests.period", f"{item.period} is not offered ({allowed})")
        if (item.gpu_type, item.period) in seen:
            raise ValidationError(
                "requests", f"{item.gpu_type} {item.period} is asked for twice; merge them"
            )
        seen.add((item.gpu_type, item.period))
    total = sum(i.gpu_hours for i in sub.batch)
    if rules.max_gpu_hours is not None and total > rules.max_gpu_hours:
        raise ValidationError(
            "requests",
            f"{total:,.0f} GPU-hours is more than this call's limit of "
            f"{rules.max_gpu_hours:,.0f} per application",
        )
    if not 0 < sub.min_gpu_hours <= total:
        raise ValidationError(
            "min_gpu_hours", f"must be more than 0 and at most the {total:,.0f} GPU-hours asked"
        )


def _check_type(rules: CallRules, gpu_type: str, field: str) -> None:
    if gpu_type not in rules.gpu_types:
        allowed = ", ".join(sorted(rules.gpu_types))
        raise ValidationError(field, f"{gpu_type} is not offered by this call ({allowed})")


def _check_tags(taxonomy: Sequence[str], tags: Sequence[str]) -> None:
    unknown = [t for t in tags if t not in taxonomy]
    if unknown:
        raise ValidationError(
            "tags", f"unknown tags {', '.join(unknown)}; use: {', '.join(taxonomy)}"
        )


def _check_lease(rules: CallRules, lease: LeaseItem | None) -> None:
    if lease is None:
        raise ValidationError("lease", "a lease application needs gpu_type, gpus and a window")
    _check_type(rules, lease.gpu_type, "lease.gpu_type")
    if rules.max_lease_gpus is not None and lease.gpus > rules.max_lease_gpus:
        raise ValidationError(
            "lease.gpus", f"at most {rules.max_lease_gpus} GPUs may be leased in this call"
        )
    inside = sum(overlap_hours(lease.start, lease.end, p) for p in rules.periods)
    if inside + 1e-6 < lease.hours:
        first = min(quarter_bounds(p)[0] for p in rules.periods)
        last = max(quarter_bounds(p)[1] for p in rules.periods)
        raise ValidationError(
            "lease.starts_at",
            f"the lease window must lie within the call's periods ({first:%Y-%m-%d} to "
            f"{last:%Y-%m-%d})",
        )
    if rules.max_gpu_hours is not None and lease.gpus * lease.hours > rules.max_gpu_hours:
        raise ValidationError(
            "lease.gpus",
            f"{lease.gpus * lease.hours:,.0f} GPU-hours is more than this call's limit of "
            f"{rules.max_gpu_hours:,.0f} per application",
        )
