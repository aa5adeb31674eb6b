"""The ledger: totals are job usage plus adjustments, idempotent by source, append-only,
and the monthly roll-up always equals the raw ledger."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from gpucenter.domain.errors import PermissionDenied, ValidationError
from gpucenter.persistence.tables import JobRow, LedgerEntryRow
from gpucenter.persistence.tables_accounting import LedgerAdjustmentRow, LedgerMonthlyRow
from gpucenter.services.accounting.ledger import (
    AdjustmentKind,
    UsageCharge,
    adjust,
    ingest_usage,
    ledger_totals,
    refund_job_run,
    transfer,
)
from tests.accounting.conftest import ADMIN, T0, World, add_job, run_and_charge


def _rollup_matches_ledger(w: World) -> None:
    with w.ctx.sessions.begin() as s:
        raw: dict[tuple[str, int, int, str], float] = defaultdict(float)
        counts: dict[tuple[str, int, int, str], int] = defaultdict(int)
        sites = dict(s.execute(select(JobRow.id, JobRow.site_id)).all())
        for e in s.scalars(select(LedgerEntryRow)):
            key = (
                f"{e.created_at:%Y-%m}",
                e.allocation_id,
                sites.get(e.job_id, 0) if e.job_id else 0,
                e.gpu_type,
            )
            raw[key] += e.gpu_seconds
            counts[key] += 1
        rolled = {
            (r.month, r.allocation_id, r.site_id, r.gpu_type): (r.gpu_seconds, r.entries)
            for r in s.scalars(select(LedgerMonthlyRow))
        }
    assert set(rolled) == set(raw)
    for key, secs in raw.items():
        assert rolled[key][0] == pytest.approx(secs, abs=1e-6)
        assert rolled[key][1] == counts[key]


def test_totals_equal_job_usage_plus_adjustments_under_random_jobs_refunds_and_retries(
    world: World,
) -> None:
    rng = random.Random(7)
    usage = 0.0
    adjustments = 0.0
    jobs: list[int] = []
    with world.ctx.sessions.begin() as s:
        for i in range(60):
            started = T0 + timedelta(days=rng.randrange(0, 70), seconds=rng.randrange(86400))
            job = add_job(
                s,
                world,
                alpha=rng.random() < 0.5,
                gpu_type=rng.choice(["h100", "b200"]),
                gpus=rng.choice([1, 2, 4, 8]),
                started=started,
                site_b=rng.random() < 0.3,
            )
            seconds = rng.uniform(10, 5000)
            run_and_charge(s, job, seconds)
            usage += seconds * job.gpus_per_node
            for _ in range(rng.randrange(0, 3)):  # the loop retries the same end: no-op
                run_and_charge(s, job, seconds + 99)
            if rng.random() < 0.25:  # requeued after a node failure: a second run
                job.runs += 1
                job.started_at = started + timedelta(hours=2)
                run_and_charge(s, job, seconds / 2)
                usage += seconds / 2 * job.gpus_per_node
            jobs.append(job.id)
            if i % 20 == 0:
                s.flush()
    with world.ctx.sessions.begin() as s:
        for job_id in rng.sample(jobs, 15):
            for _ in range(rng.randrange(1, 3)):  # a refund retried is still one refund
                adj = refund_job_run(s, ADMIN, job_id, None, "node failed under the job", T0)
            adjustments += adj.gpu_seconds
        for k in range(5):
            for _ in range(2):
                a = adjust(
                    s, ADMIN, AdjustmentKind.CREDIT, world.alpha_alloc, 1.5, "outage", f"c{k}", T0
                )
            adjustments += a.gpu_seconds
        out, into = transfer(
            s, ADMIN, world.alpha_alloc, world.beta_alloc, 3.0, "rebalance", "t1", T0
        )
        transfer(s, ADMIN, world.alpha_alloc, world.beta_alloc, 3.0, "rebalance", "t1", T0)
        adjustments += out.gpu_seconds + into.gpu_seconds
    with world.ctx.sessions.begin() as s:
        totals = ledger_totals(s)
        n_adj = s.scalar(select(func.count()).select_from(LedgerAdjustmentRow))
    assert totals.usage_gpu_seconds == pytest.approx(usage, rel=1e-9)
    assert totals.adjustments_gpu_seconds == pytest.approx(adjustments, rel=1e-9)
    assert totals.total_gpu_seconds == pytest.approx(usage + adjustments, rel=1e-9)
    assert n_adj == 15 + 5 + 2
    _rollup_matches_ledger(world)


def test_ingest_is_idempotent_by_source_and_feeds_the_rollup(world: World) -> None:
    charges = [
        UsageCharge(f"slurm:c:{i}", world.beta_alloc, "h100", 100.0 + i, T0 + timedelta(hours=i))
        for i in range(50)
    ]
    with world.ctx.sessions.begin() as s:
        first = ingest_usage(s, charges)
    with world.ctx.sessions.begin() as s:
        second = ingest_usage(s, charges + charges[:3])
    assert (first.inserted, second.inserted, second.duplicates) == (50, 0, 53)
    again = [UsageCharge("slurm:c:new", world.beta_alloc, "h100", 7.0, T0)] * 3
    with world.ctx.sessions.begin() as s:
        assert ingest_usage(s, again).inserted == 1  # duplicates within one batch too
    charges.append(again[0])
    with world.ctx.sessions.begin() as s:
        assert ledger_totals(s).total_gpu_seconds == pytest.approx(
            sum(c.gpu_seconds for c in charges)
        )
    _rollup_matches_ledger(world)


def test_the_ledger_is_append_only(world: World) -> None:
    with world.ctx.sessions.begin() as s:
        job = add_job(s, world, alpha=True)
        run_and_charge(s, job, 100)
    for sql in ("UPDATE ledger_entries SET gpu_seconds = 0", "DELETE FROM ledger_entries"):
        with pytest.raises((DBAPIError, IntegrityError)), world.ctx.sessions.begin() as s:
            s.execute(text(sql))


def test_adjustments_need_a_reason_and_an_accountant(world: World) -> None:
    with world.ctx.sessions.begin() as s:
        job = add_job(s, world, alpha=True)
        run_and_charge(s, job, 100)
    with pytest.raises(ValidationError), world.ctx.sessions.begin() as s:
        refund_job_run(s, ADMIN, job.id, None, "  ", T0)
    with pytest.raises(PermissionDenied), world.ctx.sessions.begin() as s:
        refund_job_run(s, world.centre.alice, job.id, None, "mine", T0)
