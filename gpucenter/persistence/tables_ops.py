"""The control plane's own running state: leadership, periodic work, cursors, site health.

These rows are what lets several servers (and a server that restarts) keep the centre's
promises: the leader's epoch fences a deposed scheduler's writes, periodic work remembers
when it last ran (a failover never re-runs a monthly check), each usage source keeps the
point up to which it has been read, and every process can tell how each site is doing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gpucenter.persistence.tables import Base


class SchedulerLeaderRow(Base):
    """One row (id 1): the scheduler leader's epoch and lease.

    `epoch` grows by one each time a server takes the leadership; every write the scheduler
    makes checks, in its own transaction, that the epoch is still the one it took. The lease
    (`expires_at`, database clock) is renewed by the leader every few seconds; a follower
    that finds it expired ends the silent leader's database sessions and takes over.
    """

    __tablename__ = "scheduler_leader"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    holder: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    taken_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PeriodicRunRow(Base):
    """When a periodic task of the leader last ran, and how it went."""

    __tablename__ = "periodic_runs"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_ok_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str] = mapped_column(Text, nullable=False, default="")
    summary: Mapped[str] = mapped_column(Text, nullable=False, default="")


class UsageCursorRow(Base):
    """How far a usage source (``slurm:<cluster>``) has been read: every job that ended
    before `position` is in the ledger (or flagged). Moved only in the transaction that
    writes the charges, so an ingest interrupted anywhere re-reads from the same place."""

    __tablename__ = "usage_cursors"
    source: Mapped[str] = mapped_column(String(200), primary_key=True)
    position: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class UsageFlagRow(Base):
    """Usage found at a site that gpucenter did not charge: a job run under a project's
    account outside gpucenter at a site whose policy is to flag such jobs to the operator."""

    __tablename__ = "usage_flags"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"))
    account: Mapped[str] = mapped_column(String(200), nullable=False)
    username: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    gpu_type: Mapped[str] = mapped_column(String(40), nullable=False, default="gpu")
    gpu_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    ended_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class SiteHealthRow(Base):
    """A site's health as the scheduler leader last saw it, for every process to read
    (readiness answers from any API worker; only the leader polls the sites)."""

    __tablename__ = "site_health"
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), primary_key=True)
    ok: Mapped[bool] = mapped_column(nullable=False, default=True)
    detail: Mapped[str] = mapped_column(Text, nullable=False, default="")
    since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    checked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
