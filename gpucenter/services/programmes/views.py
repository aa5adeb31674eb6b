"""Programmes, calls, applications, reviews and awards as the API, the portal and the CLI read
them: frozen copies made inside the services, before the transaction ends.

Why: routes and pages must not hold ORM rows (a row drags the session along, and whatever a
template touches becomes a query). Field names are the rows', so the API's JSON and the
templates read the same attributes as before; JSON columns (config, lease, scores, result)
are handed over as the mappings they are and must be treated as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gpucenter.persistence.tables_allocation import (
    ApplicationRow,
    AwardRow,
    AwardRunRow,
    CallRow,
    ProgrammeRow,
    ReviewRow,
)


@dataclass(frozen=True, slots=True)
class ProgrammeView:
    id: int
    name: str
    owner: str
    title: str

    @classmethod
    def of(cls, row: ProgrammeRow) -> ProgrammeView:
        return cls(row.id, row.name, row.owner, row.title)


@dataclass(frozen=True, slots=True)
class CallView:
    """A call as stored: its state is the stored one ('open' or 'decided')."""

    id: int
    programme_id: int
    name: str
    title: str
    opens_at: datetime
    closes_at: datetime
    state: str
    config: dict[str, Any]

    @classmethod
    def of(cls, row: CallRow) -> CallView:
        return cls(
            row.id,
            row.programme_id,
            row.name,
            row.title,
            row.opens_at,
            row.closes_at,
            row.state,
            row.config,
        )


@dataclass(frozen=True, slots=True)
class CallOverview:
    """A call as an applicant (or its manager) reads it: what it offers, until when, to
    whom, and where it stands now ('upcoming', 'open', 'closed' or 'decided')."""

    id: int
    programme: str
    owner: str
    title: str
    opens_at: datetime
    closes_at: datetime
    state: str
    gpu_types: list[str]
    periods: list[str]
    eligible: list[str]
    kinds: list[str]
    taxonomy: list[str]
    max_gpu_hours: float | None
    capacity: dict[tuple[str, str], float]


@dataclass(frozen=True, slots=True)
class ApplicationView:
    id: int
    call_id: int
    applicant_id: int
    organisation_id: int
    title: str
    plan: str
    team: list[str]
    region: str
    kind: str
    min_gpu_hours: float
    lease: dict[str, Any] | None
    tags: list[str]
    state: str
    parent_award_id: int | None
    created_at: datetime
    submitted_at: datetime | None

    @classmethod
    def of(cls, row: ApplicationRow) -> ApplicationView:
        return cls(
            id=row.id,
            call_id=row.call_id,
            applicant_id=row.applicant_id,
            organisation_id=row.organisation_id,
            title=row.title,
            plan=row.plan,
            team=row.team,
            region=row.region,
            kind=row.kind,
            min_gpu_hours=row.min_gpu_hours,
            lease=row.lease,
            tags=row.tags,
            state=row.state,
            parent_award_id=row.parent_award_id,
            created_at=row.created_at,
            submitted_at=row.submitted_at,
        )


@dataclass(frozen=True, slots=True)
class ReviewView:
    application_id: int
    reviewer_id: int
    scores: dict[str, float]
    total: float | None
    comment: str
    assigned_at: datetime
    submitted_at: datetime | None

    @classmethod
    def of(cls, row: ReviewRow) -> ReviewView:
        return cls(
            row.application_id,
            row.reviewer_id,
            row.scores,
            row.total,
            row.comment,
            row.assigned_at,
            row.submitted_at,
        )


@dataclass(frozen=True, slots=True)
class AwardRunView:
    """An optimiser run: `result` holds the plan, its explanation and the charts' data."""

    id: int
    call_id: int
    created_at: datetime
    method: str
    gap: float
    objective: float
    greedy_objective: float
    decided: bool
    result: dict[str, Any]

    @classmethod
    def of(cls, row: AwardRunRow) -> AwardRunView:
        return cls(
            row.id,
            row.call_id,
            row.created_at,
            row.method,
            row.gap,
            row.objective,
            row.greedy_objective,
            row.decided,
            row.result,
        )


@dataclass(frozen=True, slots=True)
class AwardView:
    id: int
    call_id: int
    application_id: int
    project_id: int
    gpu_hours: float
    lease_gpus: int
    cells: list[Any]
    override_reason: str | None
    decided_at: datetime

    @classmethod
    def of(cls, row: AwardRow) -> AwardView:
        return cls(
            row.id,
            row.call_id,
            row.application_id,
            row.project_id,
            row.gpu_hours,
            row.lease_gpus,
            row.cells,
            row.override_reason,
            row.decided_at,
        )


@dataclass(frozen=True, slots=True)
class AllocationStateView:
    """An allocation's state after a suspend or resume."""

    id: int
    state: str


__all__ = [
    "AllocationStateView",
    "ApplicationView",
    "AwardRunView",
    "AwardView",
    "CallOverview",
    "CallView",
    "ProgrammeView",
    "ReviewView",
]
