"""After the award: agreements, the reserve list, monthly use notices, reports, outcomes and
change requests (renewals, supplements, extensions, transfers).

States are stored as the values of the enums in `gpucenter.allocation.lifecycle`; each row
that changes state says who changed it and when, and the audit log has every move.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from gpucenter.persistence.tables import Base


def _ts() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False)


def _when() -> Mapped[datetime | None]:
    return mapped_column(DateTime(timezone=True))


class AgreementRow(Base):
    """The terms an award is offered on, and who accepted (and countersigned) them when."""

    __tablename__ = "award_agreements"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    award_id: Mapped[int] = mapped_column(ForeignKey("awards.id"), nullable=False, unique=True)
    state: Mapped[str] = mapped_column(String(30), nullable=False, index=True)
    # Period, GPU-hours or lease, permitted use and reporting duties, as offered.
    terms: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    countersignature: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    offered_at: Mapped[datetime] = _ts()
    respond_by: Mapped[datetime] = _ts()
    accepted_by: Mapped[int | None] = mapped_column(Integer)
    accepted_at: Mapped[datetime | None] = _when()
    countersigned_by: Mapped[int | None] = mapped_column(Integer)
    countersigned_at: Mapped[datetime | None] = _when()
    closed_at: Mapped[datetime | None] = _when()  # declined or lapsed
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")


class ReserveRow(Base):
    """A call's ranked reserve list, kept by the decision: the next in line for capacity a
    decline, a lapse or a reclaim frees."""

    __tablename__ = "reserve_entries"
    __table_args__ = (UniqueConstraint("application_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), nullable=False, index=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), nullable=False)
    rank: Mapped[int] = mapped_column(Integer, nullable=False)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    award_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _ts()


class UseCheckRow(Base):
    """One monthly use check: unique by month, so the leader runs each month's once."""

    __tablename__ = "use_checks"
    __table_args__ = (UniqueConstraint("month"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    month: Mapped[str] = mapped_column(String(7), nullable=False)
    ran_at: Mapped[datetime] = _ts()
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)


class UseNoticeRow(Base):
    """What a monthly check raised about an award: a warning, a reclaim (with its appeal
    window and the appeal) or a commercial-use flag for review."""

    __tablename__ = "use_notices"
    __table_args__ = (UniqueConstraint("award_id", "allocation_id", "kind", "month"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    award_id: Mapped[int] = mapped_column(ForeignKey("awards.id"), nullable=False, index=True)
    allocation_id: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    month: Mapped[str] = mapped_column(String(7), nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    gpu_hours: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    appeal_by: Mapped[datetime | None] = _when()
    appeal: Mapped[str] = mapped_column(Text, nullable=False, default="")
    appealed_at: Mapped[datetime | None] = _when()
    decided_by: Mapped[int | None] = mapped_column(Integer)
    decided_at: Mapped[datetime | None] = _when()
    decision: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = _ts()


class AwardReportRow(Base):
    """A progress or final report an award owes, its answers and its review.

    `hold_after` is set where the programme holds new jobs while a report is overdue: the
    instant (due date plus grace) from which an unsubmitted report holds the project.
    """

    __tablename__ = "award_reports"
    __table_args__ = (UniqueConstraint("award_id", "kind", "seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    award_id: Mapped[int] = mapped_column(ForeignKey("awards.id"), nullable=False, index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    due_at: Mapped[datetime] = _ts()
    hold_after: Mapped[datetime | None] = _when()
    state: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    answers: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    submitted_by: Mapped[int | None] = mapped_column(Integer)
    submitted_at: Mapped[datetime | None] = _when()
    reminded_at: Mapped[datetime | None] = _when()
    overdue_at: Mapped[datetime | None] = _when()
    reviewed_by: Mapped[int | None] = mapped_column(Integer)
    reviewed_at: Mapped[datetime | None] = _when()
    review_note: Mapped[str] = mapped_column(Text, nullable=False, default="")


class OutcomeRow(Base):
    """A paper (DOI), model, patent, product or number of people trained, from an award."""

    __tablename__ = "award_outcomes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    award_id: Mapped[int] = mapped_column(ForeignKey("awards.id"), nullable=False, index=True)
    report_id: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    title: Mapped[str] = mapped_column(String(500), nullable=False)
    identifier: Mapped[str] = mapped_column(String(500), nullable=False, default="")
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    recorded_by: Mapped[int | None] = mapped_column(Integer)
    recorded_at: Mapped[datetime] = _ts()


class AwardRequestRow(Base):
    """A renewal, supplement, extension or transfer asked for a standing award, and the
    steps of its review path (a reviewer's recommendation, the manager's decision)."""

    __tablename__ = "award_requests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    award_id: Mapped[int] = mapped_column(ForeignKey("awards.id"), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    state: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    justification: Mapped[str] = mapped_column(Text, nullable=False, default="")
    submitted_by: Mapped[int] = mapped_column(Integer, nullable=False)
    submitted_at: Mapped[datetime] = _ts()
    reviewer_id: Mapped[int | None] = mapped_column(Integer)
    recommendation: Mapped[str] = mapped_column(Text, nullable=False, default="")
    recommended_at: Mapped[datetime | None] = _when()
    decided_by: Mapped[int | None] = mapped_column(Integer)
    decided_at: Mapped[datetime | None] = _when()
    decision: Mapped[str] = mapped_column(Text, nullable=False, default="")
