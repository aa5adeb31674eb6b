"""Ingest writes COPY text itself on PostgreSQL: sources with tabs, backslashes and line
ends, a job id or none, and naive or zoned times come back exactly as given; a bad record
leaves nothing written."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from gpucenter.domain.errors import ValidationError
from gpucenter.persistence.tables import LedgerEntryRow
from gpucenter.services.accounting.ledger import UsageCharge, ingest_usage
from tests.accounting.conftest import T0, World

AWKWARD = ["plain", "tab\there", "back\\slash", "line\nend", "cr\rend", "ünïcode", "\\N"]


def test_awkward_sources_round_trip(world: World) -> None:
    charges = [
        UsageCharge(
            f"src:{text}",
            world.alpha_alloc,
            "vgpu",
            1.5 + i,
            T0 + timedelta(hours=i),
            None,
        )
        for i, text in enumerate(AWKWARD)
    ]
    with world.ctx.sessions.begin() as s:
        result = ingest_usage(s, charges)
    assert result.inserted == len(AWKWARD)
    with world.ctx.sessions.begin() as s:
        rows = {
            r.source: r
            for r in s.scalars(select(LedgerEntryRow).where(LedgerEntryRow.source.like("src:%")))
        }
    assert set(rows) == {c.source for c in charges}
    for c in charges:
        row = rows[c.source]
        assert row.gpu_seconds == c.gpu_seconds
        assert row.job_id is None
        assert row.allocation_id == c.allocation_id
        created = (
            row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=T0.tzinfo)
        )
        assert created == c.at
    with world.ctx.sessions.begin() as s:  # idempotent: a second ingest adds nothing
        assert ingest_usage(s, charges).inserted == 0


def test_a_record_without_source_writes_nothing(world: World) -> None:
    with world.ctx.sessions() as s:
        before = s.scalar(select(func.count()).select_from(LedgerEntryRow))
    good = UsageCharge("ok:1", world.alpha_alloc, "vgpu", 1.0, T0, None)
    bad = UsageCharge("", world.alpha_alloc, "vgpu", 1.0, T0, None)
    with pytest.raises(ValidationError), world.ctx.sessions.begin() as s:
        ingest_usage(s, [good, bad])
    with world.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntryRow)) == before
