"""`PriorityWeights.favor_small`: the job-size factor favours little requested work.

Off by default (the core's defaults are unchanged); on, a job asking for fewer GPU-seconds
(GPUs x time limit) ranks higher, the breakdown still adds up to the priority the queue
ordered by, and fair share still dominates it.
"""

from __future__ import annotations

import random

from gpucenter.core import (
    FairShare,
    PassResult,
    Policies,
    PriorityWeights,
    Scheduler,
    ShareAccount,
    schedule_pass,
)
from gpucenter.core.priority import small_factor
from gpucenter.domain.ids import JobId, ProjectId
from tests.core.builders import T0, cluster, job

SMALL = Policies(weights=PriorityWeights(job_size=2_000.0, favor_small=True))


def test_small_factor_is_monotone_and_bounded() -> None:
    week = 7 * 24 * 3600.0
    prev = 2.0
    for work in (1, 60, 3600, 86_400, 10**6, 10**8):
        f = small_factor(1, work, 64, week)
        assert 0.0 <= f <= 1.0 and f < prev
        prev = f
    assert small_factor(64, week, 64, week) == 0.0  # the whole cluster for max_age_s
    assert small_factor(64, 10 * week, 64, week) == 0.0  # clipped, never negative


def test_less_work_first_only_when_asked() -> None:
    snap = cluster().nodes(1, gpus=8).busy("n0", 8, limit=3600).snapshot()
    queue = [
        job(1, gpus=8, limit=36_000, submitted=T0 - 50),  # most work, oldest
        job(2, gpus=1, limit=600, submitted=T0 - 10),  # least work
        job(3, gpus=2, limit=3600, submitted=T0 - 20),
    ]
    order = _order(schedule_pass(snap, queue, T0, policy=SMALL))
    assert order == [2, 3, 1]
    # The defaults (size favours big jobs) are untouched.
    default = schedule_pass(snap, queue, T0)
    assert _order(default)[0] == 1


def test_breakdown_adds_up_to_the_order() -> None:
    rng = random.Random(7)
    snap = cluster().nodes(4, gpus=8).busy(["n0", "n1", "n2", "n3"]).snapshot()
    queue = [
        job(
            i,
            gpus=rng.choice((1, 2, 4, 8)),
            limit=rng.choice((60, 600, 3600, 86_400)),
            submitted=T0 - rng.randrange(1, 10_000),
            project=rng.choice((1, 2)),
        )
        for i in range(1, 60)
    ]
    res = schedule_pass(snap, queue, T0, policy=SMALL)
    for b in res.priorities.values():
        row = b.as_row()
        parts = row["fairshare"] + row["age"] + row["jobsize"] + row["qos"]
        assert abs(parts - row["priority"]) < 1e-6
        src = next(j for j in queue if j.job_id == b.job_id)
        want = small_factor(src.request.total_gpus, src.time_limit_s, 32, 7 * 24 * 3600.0)
        assert abs(b.job_size - want) < 1e-12
    totals = [res.priorities[JobId(i)].total for i in _order(res)]
    assert totals == sorted(totals, reverse=True)


def test_fair_share_still_dominates() -> None:
    """The project far over its share waits behind the other's long job."""
    root = ShareAccount(
        "root",
        children=(
            ShareAccount("a", project_id=ProjectId(1)),
            ShareAccount("b", project_id=ProjectId(2)),
        ),
    )
    fs = FairShare(root, {ProjectId(1): 1e9, ProjectId(2): 1.0})
    snap = cluster().nodes(1, gpus=8).busy("n0", 8).snapshot()
    queue = [job(1, gpus=1, limit=60, project=1), job(2, gpus=8, limit=86_400, project=2)]
    assert _order(schedule_pass(snap, queue, T0, policy=SMALL, fair_share=fs)) == [2, 1]


def test_incremental_queue_orders_as_a_fresh_pass() -> None:
    """Jobs submitted between recalculations get the same constant part as a bulk load."""
    snap = cluster().nodes(2, gpus=8).busy(["n0", "n1"]).snapshot()
    queue = [job(i, gpus=1 + i % 8, limit=60 * (1 + i * 37 % 500)) for i in range(1, 40)]
    s = Scheduler(snap.nodes, policy=SMALL, running=snap.running)
    s.submit_all(queue[:10])
    s.run_pass(T0)
    for j in queue[10:]:
        s.submit(j)
    incremental = {int(q.id): q.const for q in s.queue.pending.values()}
    fresh = Scheduler(snap.nodes, policy=SMALL, running=snap.running)
    fresh.submit_all(queue)
    assert incremental == {int(q.id): q.const for q in fresh.queue.pending.values()}


def _order(res: PassResult) -> list[int]:
    prios = res.priorities
    return [int(j) for j in sorted(prios, key=lambda j: (-prios[j].total, int(j)))]
