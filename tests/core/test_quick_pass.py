"""Quick passes (`Scheduler.run_pass(backfill=False)`), Slurm's main scheduler beside its
backfill scheduler: the top of the queue in strict priority order per GPU type."""

from __future__ import annotations

import random

import pytest

from gpucenter.core import Policies, Scheduler
from gpucenter.core.model import PassResult
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import WaitReason
from tests.core.builders import T0, cluster, job

FROZEN = Policies(priority_recalc_s=1e12)  # one order for the whole test


def _started(result: PassResult) -> set[int]:
    return {int(s.job_id) for s in result.starts}


def _two_busy_h100(**extra: object) -> Scheduler:
    """n0 and n1 (h100) busy for an hour with jobs 900 and 901; b0 (b200) free."""
    snap = (
        cluster()
        .nodes(2)
        .nodes(1, gpu_type="b200", prefix="b")
        .busy("n0", job=900, limit=3600, started=T0)
        .busy("n1", job=901, limit=3600, started=T0)
        .snapshot()
    )
    policy = Policies(priority_recalc_s=1e12, **extra)  # type: ignore[arg-type]
    return Scheduler(snap.nodes, running=snap.running, policy=policy)


def test_a_blocked_job_closes_its_type_until_the_backfill_pass() -> None:
    s = _two_busy_h100()
    s.submit(job(1, 8, 2, submitted=T0 - 900))  # the top job: both nodes
    s.submit(job(2, 1, limit=600, submitted=T0 - 10))  # short: fits before job 1's start
    first = s.run_pass(T0)
    assert not first.starts and 1 in {int(p.job_id) for p in first.planned}
    s.finish(JobId(900))
    quick = s.run_pass(T0 + 10, backfill=False)
    assert not quick.starts
    assert quick.waits[JobId(1)].reason in (WaitReason.RESOURCES, WaitReason.PRIORITY)
    assert JobId(2) not in quick.waits  # not looked at: job 1 closed h100
    backfill = s.run_pass(T0 + 10)
    assert _started(backfill) == {2}  # ends before job 1 can start: backfilled


def test_a_blocked_job_leaves_other_types_open() -> None:
    s = _two_busy_h100()
    s.submit(job(1, 8, 2, submitted=T0 - 900))
    s.submit(job(3, 1, gpu_type="b200", submitted=T0 - 5))
    s.run_pass(T0)
    s.submit(job(4, 2, gpu_type="b200", submitted=T0))
    quick = s.run_pass(T0 + 10, backfill=False)
    assert _started(quick) == {4}


def test_a_job_skipped_for_a_closed_type_closes_its_other_types() -> None:
    s = _two_busy_h100()
    s.submit(job(1, 8, 2, submitted=T0 - 900))
    s.submit(job(9, 8, gpu_type="b200", submitted=T0 - 800))  # holds b0 until it ends
    s.run_pass(T0)  # job 9 starts on b0
    s.finish(JobId(9))
    s.submit(job(2, 8, 2, alternatives=("b200",), submitted=T0 - 700))  # h100 or b200
    s.submit(job(3, 1, gpu_type="b200", submitted=T0 - 5))
    quick = s.run_pass(T0 + 10, backfill=False)
    assert not quick.starts  # job 2 skipped (h100 closed) closes b200 for job 3
    assert JobId(3) not in quick.waits
    backfill = s.run_pass(T0 + 10)
    assert 3 in _started(backfill)


def test_a_quick_pass_looks_at_no_more_than_its_depth() -> None:
    snap = cluster().nodes(1).snapshot()
    s = Scheduler(snap.nodes, policy=Policies(priority_recalc_s=1e12, quick_depth=2))
    s.submit(job(100, 8, limit=60, submitted=T0 - 1000))
    s.run_pass(T0)  # job 100 takes the node
    for i in range(1, 5):
        s.submit(job(i, 1, submitted=T0 - 100 * i))
    s.finish(JobId(100))
    quick = s.run_pass(T0 + 60, backfill=False)
    assert len(quick.starts) == 2
    assert len(s.run_pass(T0 + 60).starts) == 2


def test_quota_and_budget_waits_close_nothing() -> None:
    limits = {ProjectId(5): {"h100": 0}}
    snap = cluster().nodes(1).busy("n0", job=900, limit=60, started=T0).snapshot()
    s = Scheduler(
        snap.nodes,
        running=snap.running,
        policy=Policies(priority_recalc_s=1e12, project_gpu_limits=limits),
    )
    s.submit(job(1, 1, project=5, submitted=T0 - 900))  # over its project's limit
    s.submit(job(2, 1, project=6, budget=10.0, submitted=T0 - 800))  # budget exhausted
    s.submit(job(3, 1, project=7, submitted=T0 - 10))
    s.run_pass(T0)
    s.finish(JobId(900))
    quick = s.run_pass(T0 + 60, backfill=False)
    assert quick.waits[JobId(1)].reason is WaitReason.QUOTA_LIMIT
    assert quick.waits[JobId(2)].reason is WaitReason.ALLOCATION_EXHAUSTED
    assert _started(quick) == {3}


def test_the_first_pass_of_a_scheduler_is_a_backfill_pass() -> None:
    s = _two_busy_h100()
    s.submit(job(1, 8, 2, submitted=T0 - 900))
    first = s.run_pass(T0, backfill=False)
    assert {int(p.job_id) for p in first.planned} == {1}


@pytest.mark.parametrize("seed", range(25))
def test_quick_passes_keep_priority_order_and_capacity(seed: int) -> None:
    """Random clusters and queues, quick and backfill passes interleaved with completions:
    no GPU is ever held by two jobs, and a job started by a quick pass is never below a job
    that waits for resources in that pass and shares a GPU type with it."""
    rng = random.Random(seed)
    b = cluster()
    for t in ("h100", "b200"):
        b.nodes(rng.randint(1, 4), gpus=rng.choice((4, 8)), gpu_type=t, prefix=t[0])
    snap = b.snapshot()
    s = Scheduler(snap.nodes, policy=FROZEN)
    size = {n.name: n.gpu_count for n in snap.nodes}
    held: dict[tuple[str, int], int] = {}
    types_of: dict[int, tuple[str, ...]] = {}
    now = T0
    next_id = 0
    quick_starts = 0
    for step in range(30):
        for _ in range(rng.randrange(4)):
            next_id += 1
            gtype = rng.choice(("h100", "b200"))
            alts = ("b200",) if gtype == "h100" and rng.random() < 0.2 else ()
            gpn = rng.choice((1, 2, 4))
            nodes = rng.choice((1, 1, 1, 2))
            if nodes > 1:
                gpn = 4
            s.submit(
                job(
                    next_id,
                    gpn,
                    nodes,
                    gtype,
                    project=rng.randrange(4),
                    limit=rng.choice((60, 600, 3600)),
                    submitted=now - rng.uniform(0, 3000),
                    alternatives=alts,
                )
            )
            types_of[next_id] = (gtype, *alts)
        running = sorted(s.running)
        for j in rng.sample(running, min(len(running), rng.randrange(3))):
            s.finish(j)
            for key in [k for k, v in held.items() if v == int(j)]:
                del held[key]
        order = [int(q.id) for q in s.queue.order if not q.done]
        quick = step > 0 and rng.random() < 0.7
        result = s.run_pass(now, backfill=not quick)
        for st in result.starts:
            for part in st.placement:
                for g in part.gpus:
                    assert (part.node, g) not in held, f"GPU {part.node}:{g} given twice"
                    assert 0 <= g < size[part.node]
                    held[(part.node, g)] = int(st.job_id)
        if quick:
            started = _started(result)
            quick_starts += len(started)
            position = {jid: i for i, jid in enumerate(order)}
            for jid, wait in result.waits.items():
                if wait.reason not in (WaitReason.RESOURCES, WaitReason.PRIORITY):
                    continue
                for sid in started:
                    if position[sid] > position[int(jid)]:
                        assert set(types_of[sid]).isdisjoint(types_of[int(jid)]), (
                            f"job {sid} started below waiting job {jid} of a shared type"
                        )
        now += rng.choice((10.0, 60.0, 300.0))
