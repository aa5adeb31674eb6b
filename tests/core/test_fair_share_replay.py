"""A saturated replay: several tenants, long run, delivered GPU-hours follow entitled shares.

A tiny deterministic discrete-event loop drives a `Scheduler` (the same core the services
and the simulator use): jobs run to their time limit, usage is charged per tenant and
decays with a half-life, and every tenant always has work queued.
"""

from __future__ import annotations

import random

from gpucenter.core import FairShare, Scheduler, ShareAccount, decay
from gpucenter.domain.ids import JobId, ProjectId
from tests.core.builders import cluster, job

SHARES = {1: 50.0, 2: 30.0, 3: 20.0}
HALF_LIFE = 2 * 86400.0


def test_each_tenant_gets_its_entitled_share_within_5_percent() -> None:
    rng = random.Random(7)
    snapshot = cluster().nodes(16, block_size=4).snapshot()
    root = ShareAccount(
        "root",
        children=(
            ShareAccount(
                "prog",
                children=tuple(
                    ShareAccount(f"p{p}", s, project_id=ProjectId(p)) for p, s in SHARES.items()
                ),
            ),
        ),
    )
    sched = Scheduler(snapshot.nodes, fair_share=FairShare(root))
    now = 0.0
    usage = {ProjectId(p): 0.0 for p in SHARES}
    delivered = dict.fromkeys(SHARES, 0.0)
    running: dict[JobId, tuple[float, int, int]] = {}  # job -> (end, gpus, project)
    queued = dict.fromkeys(SHARES, 0)
    next_id = 0
    warmup, horizon = 5 * 86400.0, 40 * 86400.0
    while now < horizon:
        for p in SHARES:
            while queued[p] < 30:
                limit = rng.choice((1, 2, 3, 4, 6, 8)) * 3600
                sched.submit(
                    job(
                        next_id,
                        gpus=rng.choice((1, 2, 4, 8)),
                        project=p,
                        limit=limit,
                        submitted=now,
                    )
                )
                queued[p] += 1
                next_id += 1
        sched.set_fair_share(FairShare(root, usage=dict(usage)))
        result = sched.run_pass(now)
        for s in result.starts:
            rec = sched.running[s.job_id]
            gpus = sum(len(p.gpus) for p in s.placement)
            running[s.job_id] = (rec.end, gpus, int(rec.project))
            queued[int(rec.project)] -= 1
        nxt = min(end for end, _, _ in running.values())
        dt = nxt - now
        for _, gpus, p in running.values():
            usage[ProjectId(p)] += gpus * dt
            if now >= warmup:
                delivered[p] += gpus * dt
        for key in usage:
            usage[key] = decay(usage[key], dt, HALF_LIFE)
        now = nxt
        for job_id in [j for j, (end, _, _) in running.items() if end <= now]:
            del running[job_id]
            sched.finish(job_id)
    total = sum(delivered.values())
    entitled = sum(SHARES.values())
    for p, share in SHARES.items():
        got = delivered[p] / total
        want = share / entitled
        assert abs(got - want) <= 0.05 * want, (p, got, want)
