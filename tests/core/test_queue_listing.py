"""A pass's listing is the queue itself, copied only when the queue next changes in place."""

from __future__ import annotations

import random

from gpucenter.core import Policies, Scheduler
from tests.core.builders import T0, cluster, job


def _sched() -> Scheduler:
    snap = cluster().nodes(4, block_size=2).busy(["n0", "n1", "n2", "n3"], job=900).snapshot()
    return Scheduler(snap.nodes, running=snap.running, policy=Policies(priority_recalc_s=1e9))


def test_waits_and_priorities_do_not_see_later_submissions() -> None:
    rng = random.Random(5)
    a, b = _sched(), _sched()
    first = [
        job(i, rng.choice((1, 2, 8)), 1, submitted=T0 - rng.randint(0, 900)) for i in range(40)
    ]
    for s in (a, b):
        for j in first:
            s.submit(j)
        s.run_pass(T0)
    ra, rb = a.run_pass(T0 + 30), b.run_pass(T0 + 30)
    want = (list(ra.waits.items()), list(ra.priorities.items()))
    for i in range(100, 160):  # inserted into the order the pass listed
        b.submit(job(i, 1, 1, submitted=T0 - rng.randint(0, 900)))
    b.withdraw(first[3].job_id)
    assert (list(rb.waits.items()), list(rb.priorities.items())) == want
    assert len(want[0]) == 40
    later = b.run_pass(T0 + 60)
    assert len(later.waits) == 40 - 1 + 60
