"""Accounting: ledger adjustments, rate cards, budget alerts, notifications, reclaims and the
monthly roll-up that keeps the ministry's reports fast at tens of millions of ledger rows.

The ledger itself stays `ledger_entries` (tables.py): job charges *and* adjustments are rows
there, so that every reader of "GPU-seconds used" (the scheduler's budget check, allocation
states, the overview) sees refunds and transfers without knowing about them. An adjustment
additionally gets a row here with its kind, reason and author; the two share the `source`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
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


class LedgerAdjustmentRow(Base):
    """Why a non-job ledger entry exists: a refund, a credit or one leg of a transfer.

    Append-only like the ledger; `source` equals the ledger entry's source (`adj:<key>`), and
    the caller's idempotency key makes a retried adjustment a no-op.
    """

    __tablename__ = "ledger_adjustments"
    __table_args__ = (UniqueConstraint("source"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    allocation_id: Mapped[int] = mapped_column(
        ForeignKey("allocations.id"), nullable=False, index=True
    )
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    gpu_type: Mapped[str] = mapped_column(String(40), nullable=False)
    gpu_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    author_id: Mapped[int | None] = mapped_column(Integer)
    author: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[datetime] = _ts()


class LedgerMonthlyRow(Base):
    """GPU-seconds per (month, allocation, site, GPU type), maintained by database triggers
    on `ledger_entries` in the inserting transaction, so it can never lag or drift.

    `site_id` 0 means "no job, so no site" (credits, transfers). Reports read this instead
    of the ledger: a month has thousands of these rows where the ledger has millions.
    """

    __tablename__ = "ledger_monthly"
    __table_args__ = (UniqueConstraint("month", "allocation_id", "site_id", "gpu_type"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    month: Mapped[str] = mapped_column(String(7), nullable=False, index=True)
    allocation_id: Mapped[int] = mapped_column(Integer, nullable=False)
    site_id: Mapped[int] = mapped_column(Integer, nullable=False)
    gpu_type: Mapped[str] = mapped_column(String(40), nullable=False)
    gpu_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    entries: Mapped[int] = mapped_column(BigInteger, nullable=False)


class RateCardRow(Base):
    """The price and billing weight of one GPU type in one fiscal year."""

    __tablename__ = "rate_cards"
    __table_args__ = (UniqueConstraint("fiscal_year", "gpu_type"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fiscal_year: Mapped[int] = mapped_column(Integer, nullable=False)
    gpu_type: Mapped[str] = mapped_column(String(40), nullable=False)
    krw_per_gpu_hour: Mapped[float] = mapped_column(Float, nullable=False)
    billing_weight: Mapped[float] = mapped_column(Float, nullable=False)
    updated_at: Mapped[datetime] = _ts()


class BudgetPolicyRow(Base):
    """What a programme does when an allocation reaches 100%: `hold` or `opportunistic`."""

    __tablename__ = "budget_policies"
    programme_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    on_exhausted: Mapped[str] = mapped_column(String(20), nullable=False)
    updated_at: Mapped[datetime] = _ts()


class BudgetAlertRow(Base):
    """One threshold crossed by one allocation: unique, so each alert is raised once."""

    __tablename__ = "budget_alerts"
    __table_args__ = (UniqueConstraint("allocation_id", "threshold"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    allocation_id: Mapped[int] = mapped_column(ForeignKey("allocations.id"), nullable=False)
    threshold: Mapped[int] = mapped_column(Integer, nullable=False)
    used_fraction: Mapped[float] = mapped_column(Float, nullable=False)
    action: Mapped[str] = mapped_column(String(20), nullable=False, default="notify")
    raised_at: Mapped[datetime] = _ts()


class NotificationRow(Base):
    """An in-app message to one user; `emailed_at` is set once SMTP delivery succeeded."""

    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    subject: Mapped[str] = mapped_column(String(300), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False, default="")
    # {"subject": message, "body": [messages]} (migration 0016): the same text as codes, for
    # readers in another language; None for notifications written only in English.
    message: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = _ts()
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    emailed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ReclaimRow(Base):
    """GPU-hours a programme manager took back from an under-used allocation, and why."""

    __tablename__ = "reclaims"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    allocation_id: Mapped[int] = mapped_column(
        ForeignKey("allocations.id"), nullable=False, index=True
    )
    gpu_seconds: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    by_id: Mapped[int | None] = mapped_column(Integer)
    offered_to_application_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _ts()


class GpuUtilisationRow(Base):
    """Mean GPU utilisation of one job run as the dispatcher measured it (NVML, Slurm TRES)."""

    __tablename__ = "gpu_utilisation"
    __table_args__ = (UniqueConstraint("job_id", "run"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), nullable=False)
    run: Mapped[int] = mapped_column(Integer, nullable=False)
    allocation_id: Mapped[int | None] = mapped_column(Integer, index=True)
    mean_util_pct: Mapped[float] = mapped_column(Float, nullable=False)
    samples: Mapped[int] = mapped_column(Integer, nullable=False)
    measured_by: Mapped[str] = mapped_column(String(20), nullable=False)
    recorded_at: Mapped[datetime] = _ts()
