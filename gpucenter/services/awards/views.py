"""Frozen copies of the after-award rows, made inside the services' transactions.

Why: routes and pages must not hold ORM rows (see services/programmes/views.py). Field
names follow the rows, so the API's JSON and the templates read the same attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gpucenter.persistence.tables_allocation import AwardRow
from gpucenter.persistence.tables_awards import (
    AgreementRow,
    AwardReportRow,
    AwardRequestRow,
    OutcomeRow,
    ReserveRow,
    UseNoticeRow,
)


@dataclass(frozen=True, slots=True)
class AwardStateView:
    id: int
    call_id: int
    application_id: int
    project_id: int
    gpu_hours: float
    lease_gpus: int
    cells: list[Any]
    state: str
    source: str
    starts_at: datetime | None
    ends_at: datetime | None
    override_reason: str | None
    decided_at: datetime

    @classmethod
    def of(cls, row: AwardRow) -> AwardStateView:
        return cls(
            row.id,
            row.call_id,
            row.application_id,
            row.project_id,
            row.gpu_hours,
            row.lease_gpus,
            list(row.cells),
            row.state,
            row.source,
            row.starts_at,
            row.ends_at,
            row.override_reason,
            row.decided_at,
        )


@dataclass(frozen=True, slots=True)
class AgreementView:
    award_id: int
    state: str
    terms: dict[str, Any]
    countersignature: bool
    offered_at: datetime
    respond_by: datetime
    accepted_at: datetime | None
    countersigned_at: datetime | None
    closed_at: datetime | None
    reason: str

    @classmethod
    def of(cls, row: AgreementRow) -> AgreementView:
        return cls(
            row.award_id,
            row.state,
            dict(row.terms),
            row.countersignature,
            row.offered_at,
            row.respond_by,
            row.accepted_at,
            row.countersigned_at,
            row.closed_at,
            row.reason,
        )


@dataclass(frozen=True, slots=True)
class ReportView:
    id: int
    award_id: int
    kind: str
    seq: int
    due_at: datetime
    hold_after: datetime | None
    state: str
    answers: dict[str, Any]
    submitted_at: datetime | None
    review_note: str

    @classmethod
    def of(cls, row: AwardReportRow) -> ReportView:
        return cls(
            row.id,
            row.award_id,
            row.kind,
            row.seq,
            row.due_at,
            row.hold_after,
            row.state,
            dict(row.answers),
            row.submitted_at,
            row.review_note,
        )


@dataclass(frozen=True, slots=True)
class OutcomeView:
    id: int
    award_id: int
    kind: str
    title: str
    identifier: str
    count: int
    recorded_at: datetime

    @classmethod
    def of(cls, row: OutcomeRow) -> OutcomeView:
        return cls(
            row.id, row.award_id, row.kind, row.title, row.identifier, row.count, row.recorded_at
        )


@dataclass(frozen=True, slots=True)
class RequestView:
    id: int
    award_id: int
    kind: str
    state: str
    body: dict[str, Any]
    justification: str
    submitted_at: datetime
    reviewer_id: int | None
    recommendation: str
    decision: str
    decided_at: datetime | None

    @classmethod
    def of(cls, row: AwardRequestRow) -> RequestView:
        return cls(
            row.id,
            row.award_id,
            row.kind,
            row.state,
            dict(row.body),
            row.justification,
            row.submitted_at,
            row.reviewer_id,
            row.recommendation,
            row.decision,
            row.decided_at,
        )


@dataclass(frozen=True, slots=True)
class NoticeView:
    id: int
    award_id: int
    allocation_id: int
    kind: str
    month: str
    state: str
    gpu_hours: float
    reason: str
    appeal_by: datetime | None
    appeal: str
    decision: str

    @classmethod
    def of(cls, row: UseNoticeRow) -> NoticeView:
        return cls(
            row.id,
            row.award_id,
            row.allocation_id,
            row.kind,
            row.month,
            row.state,
            row.gpu_hours,
            row.reason,
            row.appeal_by,
            row.appeal,
            row.decision,
        )


@dataclass(frozen=True, slots=True)
class ReserveView:
    application_id: int
    rank: int
    score: float
    state: str
    award_id: int | None

    @classmethod
    def of(cls, row: ReserveRow) -> ReserveView:
        return cls(row.application_id, row.rank, row.score, row.state, row.award_id)


@dataclass(frozen=True, slots=True)
class AllocationLine:
    """One allocation of an award: its window, GPU-hours and use."""

    id: int
    gpu_type: str
    starts_at: datetime
    ends_at: datetime
    gpu_hours: float
    used_gpu_hours: float
    state: str


__all__ = [
    "AgreementView",
    "AllocationLine",
    "AwardStateView",
    "NoticeView",
    "OutcomeView",
    "ReportView",
    "RequestView",
    "ReserveView",
]
