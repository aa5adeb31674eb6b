"""Preemption: free GPUs held by lower-class work for a blocked entitled job.

Classes (state.py): opportunistic < borrowed < entitled. A job only preempts jobs of a
strictly lower class than the one it would start as, a job already being requeued is never
chosen again, and a pass only preempts when the job could not start within the grace period
anyway (jobs already requeuing count as freeing their GPUs). Together these rule out loops:
no cycle of jobs can each preempt the next.

Victims are chosen to lose the least work: a victim costs its GPUs x time run since start
(the work a requeue throws away without checkpoints); the node, or set of nodes, with the
smallest total cost wins.
"""

from __future__ import annotations

from collections.abc import Mapping

from gpucenter.core.pools import Pool
from gpucenter.core.state import ClusterState, RunRec
from gpucenter.domain.ids import JobId


def _victims_on(
    st: ClusterState, n: int, running: Mapping[JobId, RunRec], cls: int
) -> tuple[list[RunRec], int] | None:
    """Lower-class, not yet requeuing jobs on `n`, and GPUs that free without them
    (already free, plus jobs already requeuing). None if a higher job blocks the node."""
    victims: list[RunRec] = []
    freeing = len(st.free[n])
    for job_id, (_, used) in st.run[n].items():
        rec = running.get(job_id)
        if rec is None:
            return None
        if rec.requeue_at is not None:
            freeing += used
        elif rec.cls < cls:
            victims.append(rec)
    return victims, freeing


def _cost(rec: RunRec, now: float) -> float:
    return rec.gpus * max(0.0, now - rec.started_at)


def plan_single(
    st: ClusterState,
    pool: Pool,
    g: int,
    running: Mapping[JobId, RunRec],
    cls: int,
    now: float,
) -> list[RunRec] | None:
    """The cheapest set of victims on one node that frees g GPUs, or None."""
    best: tuple[float, int] | None = None
    best_victims: list[RunRec] = []
    for n in pool.nodes:
        if n in st.future:
            continue
        got = _victims_on(st, n, running, cls)
        if got is None:
            continue
        victims, freeing = got
        if freeing + sum(st.run[n][v.job_id][1] for v in victims) < g:
            continue
        victims.sort(key=lambda v: (_cost(v, now), v.job_id))
        chosen: list[RunRec] = []
        cost = 0.0
        for v in victims:
            if freeing >= g:
                break
            chosen.append(v)
            freeing += st.run[n][v.job_id][1]
            cost += _cost(v, now)
        if not chosen:
            continue
        if best is None or (cost, n) < best:
            best, best_victims = (cost, n), chosen
    return best_victims or None


def plan_gang(
    st: ClusterState,
    pool: Pool,
    k: int,
    running: Mapping[JobId, RunRec],
    cls: int,
    now: float,
) -> list[RunRec] | None:
    """The cheapest k nodes of one site that can be cleared entirely, or None."""
    by_site: dict[int, list[tuple[float, int, list[RunRec]]]] = {}
    for n in pool.nodes:
        if n in st.future:
            continue
        got = _victims_on(st, n, running, cls)
        if got is None:
            continue
        victims, freeing = got
        if freeing + sum(st.run[n][v.job_id][1] for v in victims) < pool.size:
            continue
        cost = sum(_cost(v, now) for v in victims)
        by_site.setdefault(st.site[n], []).append((cost, n, victims))
    best: tuple[float, int] | None = None
    best_victims: list[RunRec] = []
    for site in sorted(by_site):
        nodes = sorted(by_site[site], key=lambda e: (e[0], e[1]))
        if len(nodes) < k:
            continue
        chosen = nodes[:k]
        picked: dict[JobId, RunRec] = {}
        for _, _, vs in chosen:
            for v in vs:
                picked[v.job_id] = v
        cost = sum(_cost(v, now) for v in picked.values())
        if best is None or (cost, site) < best:
            best = (cost, site)
            best_victims = sorted(picked.values(), key=lambda v: v.job_id)
    return best_victims or None
