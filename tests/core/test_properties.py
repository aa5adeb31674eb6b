"""Invariants on random clusters and queues (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpucenter.core import (
    OPPORTUNISTIC,
    AdvanceReservation,
    ClusterSnapshot,
    PassResult,
    PendingJob,
    Start,
    schedule_pass,
)
from gpucenter.domain.ids import JobId, ProjectId
from tests.core.builders import T0, cluster, job

TYPES = ("h100", "b200")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ClusterSnapshot, list[PendingJob]]:
    b = cluster()
    for t in TYPES:
        count = draw(st.integers(1, 8))
        b.nodes(
            count,
            gpus=draw(st.sampled_from((4, 8))),
            gpu_type=t,
            prefix=t[0],
            block_size=draw(st.integers(1, 4)),
        )
    for node in list(b.node_list):
        if draw(st.booleans()):
            used = draw(st.integers(1, node.gpu_count))
            b.busy(
                node.name,
                used,
                limit=draw(st.sampled_from((600, 3600, 7200, 36000))),
                qos=draw(st.sampled_from(("normal", "normal", "opportunistic"))),
            )
    n_jobs = draw(st.integers(0, 25))
    queue = []
    for i in range(n_jobs):
        nodes = draw(st.sampled_from((1, 1, 1, 2, 3)))
        gpus = 8 if nodes > 1 and draw(st.booleans()) else draw(st.sampled_from((1, 2, 4, 8)))
        queue.append(
            job(
                i,
                gpus=gpus,
                nodes=nodes,
                gpu_type=draw(st.sampled_from(TYPES)),
                project=draw(st.integers(1, 3)),
                limit=draw(st.sampled_from((300, 3600, 7200, 86400))),
                submitted=T0 - draw(st.integers(0, 10_000)),
                qos=draw(st.sampled_from(("normal", "normal", "high", "opportunistic"))),
                alternatives=draw(st.sampled_from(((), TYPES))),
            )
        )
    return b.snapshot(), queue


def _use_at(
    snapshot: ClusterSnapshot, result: PassResult, queue: list[PendingJob], t: float
) -> dict[str, int]:
    """GPUs in use per node at instant t if every job runs to its limit."""
    limits = {j.job_id: j.time_limit_s for j in queue}
    requeue = {p.job_id: p.requeue_at for p in result.preemptions}
    use: dict[str, int] = {}
    for r in snapshot.running:
        if min(r.ends_by, requeue.get(r.job_id, r.ends_by)) > t:
            for p in r.placement:
                use[p.node] = use.get(p.node, 0) + len(p.gpus)
    for s in result.starts:
        if T0 + limits[s.job_id] > t:
            for p in s.placement:
                use[p.node] = use.get(p.node, 0) + len(p.gpus)
    return use


@SETTINGS
@given(scenarios())
def test_never_more_gpus_used_than_exist(
    scenario: tuple[ClusterSnapshot, list[PendingJob]],
) -> None:
    snapshot, queue = scenario
    result = schedule_pass(snapshot, queue, T0)
    size = {n.name: n.gpu_count for n in snapshot.nodes}
    held: dict[str, set[int]] = {}
    for r in snapshot.running:
        for p in r.placement:
            held.setdefault(p.node, set()).update(p.gpus)
    for s in result.starts:
        for p in s.placement:
            taken = held.setdefault(p.node, set())
            assert taken.isdisjoint(p.gpus), "a GPU given twice"
            taken.update(p.gpus)
            assert all(0 <= g < size[p.node] for g in p.gpus)
    assert all(len(v) <= size[k] for k, v in held.items())


@SETTINGS
@given(scenarios())
def test_gang_jobs_are_placed_whole_or_not_at_all(
    scenario: tuple[ClusterSnapshot, list[PendingJob]],
) -> None:
    snapshot, queue = scenario
    result = schedule_pass(snapshot, queue, T0)
    nodes = {n.name: n for n in snapshot.nodes}
    by_id = {j.job_id: j for j in queue}
    for s in result.starts:
        req = by_id[s.job_id].request
        assert len({p.node for p in s.placement}) == req.nodes
        assert len({nodes[p.node].gpu_type for p in s.placement}) == 1
        assert nodes[s.placement[0].node].gpu_type in req.acceptable_types
        for p in s.placement:
            expected = nodes[p.node].gpu_count if req.nodes > 1 else req.gpus_per_node
            assert len(p.gpus) == expected
    assert set(result.waits).isdisjoint(s.job_id for s in result.starts)
    assert len(result.waits) + len(result.starts) == len(queue)


@SETTINGS
@given(scenarios())
def test_backfill_never_delays_a_reserved_top_job(
    scenario: tuple[ClusterSnapshot, list[PendingJob]],
) -> None:
    snapshot, queue = scenario
    result = schedule_pass(snapshot, queue, T0)
    size = {n.name: n.gpu_count for n in snapshot.nodes}
    limits = {j.job_id: j.time_limit_s for j in queue}
    for plan in result.planned:
        # at the planned start (and at every later planned start inside its run), started
        # and running jobs plus all planned holds fit on each node
        instants = [plan.start_at] + [
            q.start_at
            for q in result.planned
            if plan.start_at < q.start_at < plan.start_at + limits[plan.job_id]
        ]
        for t in instants:
            use = _use_at(snapshot, result, queue, t)
            for q in result.planned:
                if q.start_at <= t < q.start_at + limits[q.job_id]:
                    for n in q.nodes:
                        use[n] = use.get(n, 0) + q.gpus_per_node
            for n in plan.nodes:
                assert use.get(n, 0) <= size[n], (plan, t)


@SETTINGS
@given(scenarios(), st.integers(600, 20_000))
def test_a_reservations_gpus_are_free_at_its_start(
    scenario: tuple[ClusterSnapshot, list[PendingJob]], offset: int
) -> None:
    snapshot, queue = scenario
    names = tuple(n.name for n in snapshot.nodes[:2])
    resv = AdvanceReservation(
        "r", names, frozenset({ProjectId(1)}), T0 + offset, T0 + offset + 86400
    )
    result = schedule_pass(snapshot, queue, T0, reservations=[resv])
    limits = {j.job_id: j.time_limit_s for j in queue}
    for s in result.starts:
        if any(p.node in names for p in s.placement):
            assert T0 + limits[s.job_id] <= resv.start


@SETTINGS
@given(scenarios())
def test_same_input_same_decisions(scenario: tuple[ClusterSnapshot, list[PendingJob]]) -> None:
    snapshot, queue = scenario
    a = schedule_pass(snapshot, queue, T0)
    b = schedule_pass(snapshot, list(reversed(queue)), T0)
    assert a.starts == b.starts
    assert dict(a.waits) == dict(b.waits)
    assert a.planned == b.planned
    assert a.preemptions == b.preemptions


def _fits(
    snapshot: ClusterSnapshot,
    job: PendingJob,
    t: float,
    running_end: dict[JobId, float],
    starts: list[Start],
    limits: dict[JobId, int],
) -> bool:
    """Whether `job` could start at instant t, given what still holds GPUs then.

    Stated from the job's shape alone: a single-node job needs one node of an acceptable
    type with enough idle GPUs; a gang needs that many wholly idle nodes of one type.
    """
    use: dict[str, int] = {}
    for r in snapshot.running:
        if running_end[r.job_id] > t:
            for p in r.placement:
                use[p.node] = use.get(p.node, 0) + len(p.gpus)
    for s in starts:
        if T0 + limits[s.job_id] > t:
            for p in s.placement:
                use[p.node] = use.get(p.node, 0) + len(p.gpus)
    req = job.request
    for gpu_type in req.acceptable_types:
        nodes = [
            n for n in snapshot.nodes if n.gpu_type == gpu_type and n.gpu_count >= req.gpus_per_node
        ]
        if req.nodes == 1:
            if any(n.gpu_count - use.get(n.name, 0) >= req.gpus_per_node for n in nodes):
                return True
        elif sum(1 for n in nodes if use.get(n.name, 0) == 0) >= req.nodes:
            return True
    return False


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_lower_jobs_never_delay_the_top_blocked_job(
    scenario: tuple[ClusterSnapshot, list[PendingJob]],
) -> None:
    """EASY backfill's promise, checked from the outside.

    Take the highest-priority job that waits although it could run on this cluster. From
    the running jobs (less those preempted for it or for jobs above it) and the jobs above
    it that started, work out the earliest instant it could start. Whatever lower jobs were
    started around it, it must still fit then, and the pass must have planned it no later.
    """
    snapshot, queue = scenario
    result = schedule_pass(snapshot, queue, T0)
    limits = {j.job_id: j.time_limit_s for j in queue}

    def key(j: PendingJob) -> tuple[bool, float, float, int]:
        prio = result.priorities[j.job_id].total
        return (j.qos == OPPORTUNISTIC, -prio, j.submitted_at, j.job_id)

    def ends(preempted_for: set[JobId] | None) -> dict[JobId, float]:
        """When each running job lets go of its GPUs, counting the preemptions made for
        `preempted_for` (all of them: None)."""
        requeue = {
            p.job_id: p.requeue_at
            for p in result.preemptions
            if preempted_for is None or p.for_job in preempted_for
        }
        return {
            r.job_id: min(r.ends_by, requeue.get(r.job_id, r.ends_by)) for r in snapshot.running
        }

    ordered = sorted(queue, key=key)
    top = next(
        (
            j
            for j in ordered
            if j.job_id in result.waits
            and j.qos != OPPORTUNISTIC
            and _fits(snapshot, j, float("inf"), ends(None), [], limits)
        ),
        None,
    )
    if top is None:
        return
    above = {j.job_id for j in ordered[: ordered.index(top)]}
    higher = [s for s in result.starts if s.job_id in above]
    before = ends(above | {top.job_id})
    instants = sorted({T0, *before.values(), *(T0 + limits[s.job_id] for s in higher)})
    earliest = next(
        t for t in instants if t >= T0 and _fits(snapshot, top, t, before, higher, limits)
    )
    assert _fits(snapshot, top, earliest, ends(None), list(result.starts), limits), (
        f"job {top.job_id} could start at {earliest - T0:+.0f}s but lower jobs took its GPUs"
    )
    planned = {p.job_id: p.start_at for p in result.planned}
    assert top.job_id in planned, f"job {top.job_id} waits with no planned start"
    assert planned[top.job_id] <= earliest
