"""A small centre for accounting tests: two organisations, sites, allocations and jobs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.accounting.rates import RateCard
from gpucenter.auth.permissions import Caller, Role
from gpucenter.config import Settings
from gpucenter.persistence.tables import AllocationRow, JobRow, SiteRow
from gpucenter.services.accounting.ledger import set_rate_card
from gpucenter.services.context import AppContext
from gpucenter.services.identity import accounts
from gpucenter.services.scheduling.endings import charge_job
from tests.factories import Centre, make_context, seed_centre

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ADMIN = Caller(user_id=0, username="root", is_admin=True, project_ids=frozenset())


@dataclass
class World:
    ctx: AppContext
    centre: Centre
    alpha_alloc: int
    beta_alloc: int
    site_a: int
    site_b: int

    def session(self) -> Session:
        return self.ctx.sessions()


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    ctx = make_context(settings)
    centre = seed_centre(ctx, gpu_hours=100.0)
    with ctx.sessions.begin() as s:
        site_a = s.scalar(select(SiteRow.id).where(SiteRow.name == "local"))
        other = SiteRow(name="cloud-b", kind="slurm")
        s.add(other)
        s.flush()
        allocs = {
            a.project_id: a.id for a in s.scalars(select(AllocationRow).order_by(AllocationRow.id))
        }
        for a in s.scalars(select(AllocationRow)):
            a.starts_at, a.ends_at = T0 - timedelta(days=31), T0 + timedelta(days=334)
        for year, gpu, krw, weight in ((2026, "h100", 3000.0, 1.0), (2026, "b200", 7000.0, 2.0)):
            set_rate_card(s, ADMIN, RateCard(year, gpu, krw, weight), T0)
        set_rate_card(s, ADMIN, RateCard(2025, "h100", 2000.0, 1.0), T0)
        assert site_a is not None
        world = World(
            ctx,
            centre,
            allocs[min(centre.alice.project_ids)],
            allocs[min(centre.bob.project_ids)],
            site_a,
            other.id,
        )
    yield world
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def add_job(
    s: Session,
    w: World,
    *,
    alpha: bool,
    gpu_type: str = "h100",
    gpus: int = 1,
    submitted: datetime = T0,
    started: datetime | None = T0,
    site_b: bool = False,
    state: str = "COMPLETED",
) -> JobRow:
    caller = w.centre.alice if alpha else w.centre.bob
    row = JobRow(
        project_id=min(caller.project_ids),
        allocation_id=w.alpha_alloc if alpha else w.beta_alloc,
        user_id=caller.user_id,
        site_id=w.site_b if site_b else w.site_a,
        command="true",
        gpu_type=gpu_type,
        gpus_per_node=gpus,
        nodes=1,
        time_limit_s=3600,
        env={},
        state=state,
        submitted_at=submitted,
        started_at=started,
        runs=1,
    )
    s.add(row)
    s.flush()
    return row


def run_and_charge(s: Session, job: JobRow, seconds: float) -> None:
    """Charge the job's current run through the scheduler's own charge function."""
    assert job.started_at is not None
    charge_job(s, job, job.started_at + timedelta(seconds=seconds))


def manager_of_everything() -> Caller:
    return Caller(
        user_id=0,
        username="pm",
        is_admin=False,
        project_ids=frozenset(),
        roles=frozenset({(Role.PROGRAMME_MANAGER, 0)}),
    )


__all__ = ["ADMIN", "T0", "World", "accounts"]
