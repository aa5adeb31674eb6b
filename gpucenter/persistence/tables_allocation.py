"""Allocation programmes: programmes, calls and their capacity, applications, review, awards.

Call policy (eligibility, shares, caps, bonus, rubric) is one JSON document validated by the
allocation package on the way in, because it is read and written as a whole and its shape
grows with each ministry's rules; everything queried row by row has columns.
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


class ProgrammeRow(Base):
    __tablename__ = "programmes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    title: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    owner: Mapped[str] = mapped_column(String(200), nullable=False)  # ministry or agency
    created_at: Mapped[datetime] = _ts()


class CallRow(Base):
    __tablename__ = "calls"
    __table_args__ = (UniqueConstraint("programme_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    programme_id: Mapped[int] = mapped_column(
        ForeignKey("programmes.id"), nullable=False, index=True
    )
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    title: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    opens_at: Mapped[datetime] = _ts()
    closes_at: Mapped[datetime] = _ts()
    state: Mapped[str] = mapped_column(String(20), nullable=False, default="open")
    config: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = _ts()


class CallCapacityRow(Base):
    """GPU-hours of one GPU type in one quarter that the call may award."""

    __tablename__ = "call_capacity"
    __table_args__ = (UniqueConstraint("call_id", "gpu_type", "period"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), nullable=False)
    gpu_type: Mapped[str] = mapped_column(String(40), nullable=False)
    period: Mapped[str] = mapped_column(String(10), nullable=False)
    gpu_hours: Mapped[float] = mapped_column(Float, nullable=False)


class ApplicationRow(Base):
    __tablename__ = "applications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), nullable=False, index=True)
    applicant_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), nullable=False)
    title: Mapped[str] = mapped_column(String(300), nullable=False)
    plan: Mapped[str] = mapped_column(Text, nullable=False, default="")
    team: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    region: Mapped[str] = mapped_column(String(64), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    min_gpu_hours: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    lease: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    tags: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    state: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    # A supplement or extension names the award it adds to; its allocations join that project.
    parent_award_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _ts()
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ApplicationRequestRow(Base):
    __tablename__ = "application_requests"
    __table_args__ = (UniqueConstraint("application_id", "gpu_type", "period"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), nullable=False)
    gpu_type: Mapped[str] = mapped_column(String(40), nullable=False)
    period: Mapped[str] = mapped_column(String(10), nullable=False)
    gpu_hours: Mapped[float] = mapped_column(Float, nullable=False)


class ConflictRow(Base):
    """A conflict of interest a reviewer declared (same-organisation and co-applicant ones
    are derived, not stored)."""

    __tablename__ = "review_conflicts"
    __table_args__ = (UniqueConstraint("application_id", "reviewer_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), nullable=False)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = _ts()


class ReviewRow(Base):
    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("application_id", "reviewer_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    application_id: Mapped[int] = mapped_column(
        ForeignKey("applications.id"), nullable=False, index=True
    )
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    scores: Mapped[dict[str, float]] = mapped_column(JSON, nullable=False, default=dict)
    total: Mapped[float | None] = mapped_column(Float)
    comment: Mapped[str] = mapped_column(Text, nullable=False, default="")
    assigned_at: Mapped[datetime] = _ts()
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AwardRunRow(Base):
    """One optimiser run: a what-if, or the run a decision was taken from."""

    __tablename__ = "award_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), nullable=False, index=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = _ts()
    method: Mapped[str] = mapped_column(String(40), nullable=False)
    gap: Mapped[float] = mapped_column(Float, nullable=False)
    objective: Mapped[float] = mapped_column(Float, nullable=False)
    greedy_objective: Mapped[float] = mapped_column(Float, nullable=False)
    decided: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    # 'round' (a call's award round), 'reoffer' (freed capacity down the reserve list) or
    # 'fast' (one fast-tier decision).
    purpose: Mapped[str] = mapped_column(
        String(20), nullable=False, default="round", server_default="round"
    )


class AwardRow(Base):
    __tablename__ = "awards"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), nullable=False, index=True)
    application_id: Mapped[int] = mapped_column(
        ForeignKey("applications.id"), nullable=False, unique=True
    )
    run_id: Mapped[int] = mapped_column(ForeignKey("award_runs.id"), nullable=False)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), nullable=False)
    gpu_hours: Mapped[float] = mapped_column(Float, nullable=False)
    cells: Mapped[list[Any]] = mapped_column(JSON, nullable=False, default=list)
    lease_gpus: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    override_reason: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime] = _ts()
    # The award's life (gpucenter.allocation.lifecycle.AwardState); awards made before
    # agreements existed are active.
    state: Mapped[str] = mapped_column(
        String(20), nullable=False, default="offered", server_default="active", index=True
    )
    # How it was made: 'round', 'reoffer' or 'fast' (like its run's purpose).
    source: Mapped[str] = mapped_column(
        String(20), nullable=False, default="round", server_default="round"
    )
    # The award's period: from its allocations, moved by extensions and renewals.
    starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LeaseRow(Base):
    """Dedicated GPUs for a project's window; the scheduler honours it as a reservation."""

    __tablename__ = "leases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    award_id: Mapped[int] = mapped_column(ForeignKey("awards.id"), nullable=False, index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), nullable=False)
    gpu_type: Mapped[str] = mapped_column(String(40), nullable=False)
    gpus: Mapped[int] = mapped_column(Integer, nullable=False)
    site: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    starts_at: Mapped[datetime] = _ts()
    ends_at: Mapped[datetime] = _ts()
    state: Mapped[str] = mapped_column(String(20), nullable=False, default="active")
