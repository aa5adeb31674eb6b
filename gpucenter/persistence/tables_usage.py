"""Decayed usage per (project, user) for fair share, kept up to date as charges are made."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column

from gpucenter.persistence.tables import Base


class DecayedUsageRow(Base):
    """`gpu_seconds` decayed by the fair-share half-life up to `as_of`.

    Reading it at time t multiplies by 0.5 ** ((t - as_of) / half_life): one row per
    (project, user) instead of a scan of the whole ledger on every scheduling pass.
    """

    __tablename__ = "decayed_usage"
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    gpu_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    as_of: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    charges: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
