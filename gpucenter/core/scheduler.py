"""The scheduler: state kept between passes, and one pass over the whole queue.

A `Scheduler` keeps its indices (free capacity per pool, running jobs, the queue in priority
order) and takes deltas: `submit`, `withdraw`, `add_running`, `finish`. That makes the pass
after a hundred completions cheap: nothing is rebuilt, the queue is not re-sorted (priorities
are recomputed every `priority_recalc_s`, as Slurm's PriorityCalcPeriod), and the walk over the
queue is O(1) per job once capacity is gone, thanks to a per-pass memo of failed shapes.

One pass, in priority order, for every pending job:
  budget -> project quota -> place now (reservation pools of member projects, the general
  pools, then a lease's idle GPUs as preemptible work) -> if it cannot start and it is among
  the top `max_reservations` blocked jobs, a planned start (a hold later jobs must not
  delay), after preempting lower-class work if that is the only way to start soon.
Capacity only shrinks during a pass (preempted GPUs come back after the grace period), so a
shape that failed keeps failing for any later job that would end no earlier.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from gpucenter.core.fairshare import FairShare, compute_factors
from gpucenter.core.model import (
    NodeGpus,
    NodeSnapshot,
    PassResult,
    PendingJob,
    Preemption,
    PriorityBreakdown,
    RunningJob,
    Start,
    Wait,
)
from gpucenter.core.passes import PassContext, fragmentation
from gpucenter.core.placement import place_gang, place_single
from gpucenter.core.policy import DEFAULT_POLICIES, Policies
from gpucenter.core.preemption import plan_gang, plan_single
from gpucenter.core.priority import Breakdowns, breakdown, size_factor
from gpucenter.core.queue import JobQueue, QueuedJob
from gpucenter.core.reservations import AdvanceReservation
from gpucenter.core.state import (
    BORROWED_CLASS,
    ENTITLED_CLASS,
    OPPORTUNISTIC_CLASS,
    ClusterState,
    Hold,
    RunRec,
    sync_reservations,
)
from gpucenter.core.timeline import INF, Planner
from gpucenter.domain.clock import Instant
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import WaitReason


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for a pass, then restore it.

    A pass allocates ~10^5 short-lived, acyclic objects; each automatic collection would
    rescan the whole snapshot and queue (millions of objects), which cost a third of a
    260,000-GPU pass. Results do not depend on it; reference counting still frees memory.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


_BLOCKED = frozenset(
    {WaitReason.RESOURCES, WaitReason.PRIORITY, WaitReason.RESERVATION, WaitReason.TOPOLOGY}
)


class Scheduler:
    """Scheduling state between passes; see the module docstring."""

    def __init__(
        self,
        nodes: Sequence[NodeSnapshot],
        *,
        policy: Policies = DEFAULT_POLICIES,
        fair_share: FairShare | None = None,
        reservations: Sequence[AdvanceReservation] = (),
    ) -> None:
        self.policy = policy
        self.state = ClusterState(nodes)
        self.reservations = tuple(reservations)
        self.factors = compute_factors(fair_share)
        self.running: dict[JobId, RunRec] = {}
        self.queue = JobQueue(policy, self.state.total_gpus)
        self.planner = Planner(self.state)
        self.project_use: dict[tuple[ProjectId, str], int] = {}
        self.programme_use: dict[tuple[str, str], int] = {}

    # -- deltas --------------------------------------------------------------------------
    def add_running(self, job: RunningJob) -> None:
        """Record a job that holds GPUs (from the snapshot, or started by the services)."""
        st = self.state
        if job.job_id in self.running:
            raise ValidationError("running", f"job {job.job_id} is already running")
        parts: list[tuple[int, tuple[int, ...]]] = []
        for part in job.placement:
            n = st.index.get(part.node)
            if n is None:
                raise ValidationError("placement", f"unknown node {part.node!r}")
            parts.append((n, tuple(part.gpus)))
        if not parts:
            raise ValidationError("placement", f"running job {job.job_id} holds no GPUs")
        end = job.ends_by
        for n, gpus in parts:
            st.take(n, gpus, job.job_id, end)
        first = parts[0][0]
        programme = self.factors.programme_of.get(job.project_id, "")
        rec = RunRec(
            job.job_id,
            job.project_id,
            programme,
            parts,
            job.started_at,
            end,
            job.qos,
            job.borrowed,
            job.requeue_at,
            st.gtype[first],
            st.pool_of[first],
        )
        self._account(rec, +1)

    def finish(self, job_id: JobId) -> None:
        """A running job ended (completed, failed, cancelled or requeued): free its GPUs."""
        rec = self.running.get(job_id)
        if rec is None:
            return
        self._account(rec, -1)
        for n, gpus in rec.parts:
            self.state.give_back(n, gpus, job_id)
            self.planner.touched_earlier(n)

    def _account(self, rec: RunRec, sign: int) -> None:
        if sign > 0:
            self.running[rec.job_id] = rec
        else:
            del self.running[rec.job_id]
        key = (rec.project, rec.gpu_type)
        self.project_use[key] = self.project_use.get(key, 0) + sign * rec.gpus
        if rec.cls == ENTITLED_CLASS:
            pkey = (rec.programme, rec.gpu_type)
            self.programme_use[pkey] = self.programme_use.get(pkey, 0) + sign * rec.gpus
        elif rec.requeue_at is None:
            self.state.pools[rec.pool].preemptible += sign

    def submit(self, job: PendingJob) -> None:
        """Queue a job; it is ordered by the priority computed at the last recalculation."""
        self.queue.submit(job, self.factors.factor)

    def withdraw(self, job_id: JobId) -> None:
        """A pending job left the queue (cancelled, or started outside this scheduler)."""
        self.queue.withdraw(job_id)

    def set_fair_share(self, fair_share: FairShare | None) -> None:
        """New decayed usage: priorities are recomputed at the next pass."""
        self.factors = compute_factors(fair_share)
        self.queue.prio_at = None

    def set_reservations(self, reservations: Sequence[AdvanceReservation]) -> None:
        self.reservations = tuple(reservations)

    def explain(self, q: QueuedJob, at: Instant) -> PriorityBreakdown:
        """The breakdown behind `q.prio`, computed at the instant the queue was ordered."""
        src = q.src
        return breakdown(
            src.job_id,
            fair_share=self.factors.factor(src.project_id, src.user_id),
            submitted_at=src.submitted_at,
            now=at,
            job_size=size_factor(q.total, self.state.total_gpus),
            qos=self.policy.qos_factors.get(src.qos, 0.0),
            policies=self.policy,
        )

    # -- the pass ------------------------------------------------------------------------
    def run_pass(self, now: Instant) -> PassResult:
        """Decide what starts now, what is preempted, and why every other job waits.

        Started jobs become running in this scheduler at `now`; preempted jobs keep their
        GPUs until their requeue instant, when the services call `finish`.
        """
        with paused_gc():
            return self._run_pass(now)

    def _run_pass(self, now: Instant) -> PassResult:
        st = self.state
        jq = self.queue
        if jq.prio_at is None or now - jq.prio_at >= self.policy.priority_recalc_s:
            jq.reprioritise(now, self.factors.factor)
        prio_at = jq.prio_at if jq.prio_at is not None else now
        adv_holds, moved = sync_reservations(st, self.reservations, now)
        if moved:
            self._recount_pools()
        px = PassContext(now, self.reservations, st)
        px = PassContext(now, self.reservations, st)
        planner = self.planner
        planner.begin(now)
        px.planner = planner
        limited = self.policy.project_gpu_limits
        special = set(limited)
        for _, resv in px.active:
            special |= resv.projects
        jq.passes += 1
        pass_no = jq.passes
        queue = jq.order
        waits = px.waits
        dead: dict[int, tuple[int, Wait]] = {}
        max_res = self.policy.max_reservations
        blocked_reasons = _BLOCKED
        for q in queue:
            if q.done:
                continue
            d = dead.get(q.sid)
            if (
                d is not None
                and q.limit >= d[0]
                and (q.opp or px.reserved >= max_res)
                and q.budget is None
                and q.project not in special
            ):
                waits[q.id] = d[1]
                continue
            wait = self._consider(q, px)
            if wait is None:
                jq.started(q)
                continue
            waits[q.id] = wait
            if (
                wait.reason in blocked_reasons
                and q.budget is None
                and q.project not in special
                and px.generic is not None
                and (d is None or q.limit < d[0])
            ):
                dead[q.sid] = (q.limit, px.generic)
        for n, hold in px.holds:
            st.remove_hold(n, hold)
            planner.touched_earlier(n)
        for n, hold in adv_holds.items():
            st.remove_hold(n, hold)
            planner.touched_earlier(n)
        frag = fragmentation(st, queue, waits)
        listed = queue[:]
        jq.compact()

        def ids() -> Iterator[JobId]:
            return (q.id for q in listed if q.gone >= pass_no)

        by_id: dict[JobId, QueuedJob] = {}

        def explain(job_id: JobId) -> PriorityBreakdown:
            if not by_id:
                by_id.update((q.id, q) for q in listed if q.gone >= pass_no)
            return self.explain(by_id[job_id], prio_at)

        return PassResult(
            starts=tuple(px.starts),
            waits=waits,
            priorities=Breakdowns(ids, explain),
            planned=tuple(px.planned),
            preemptions=tuple(px.preemptions),
            opportunistic=frozenset(s.job_id for s in px.starts if s.preemptible),
            fragmentation=frag,
        )

    def _recount_pools(self) -> None:
        """Nodes changed pool (a reservation window opened or closed): re-home running jobs."""
        st = self.state
        self.planner.reset()
        for pool in st.pools:
            pool.preemptible = 0
        for rec in self.running.values():
            rec.pool = st.pool_of[rec.parts[0][0]]
            if rec.cls != ENTITLED_CLASS and rec.requeue_at is None:
                st.pools[rec.pool].preemptible += 1

    def _class_for(self, q: QueuedJob, gpu_type: str) -> int:
        if q.opp:
            return OPPORTUNISTIC_CLASS
        ent = self.policy.entitlements
        if not ent:
            return ENTITLED_CLASS
        prog = self.factors.programme_of.get(q.project, "")
        owned = ent.get(prog, {}).get(gpu_type, 0)
        used = self.programme_use.get((prog, gpu_type), 0)
        return ENTITLED_CLASS if used + q.total <= owned else BORROWED_CLASS

    def _consider(self, q: QueuedJob, px: PassContext) -> Wait | None:
        src = q.src
        budget = q.budget
        if budget is not None and not q.opp:
            left = budget - px.spent.get(q.project, 0.0)
            if left < q.gpu_seconds:
                px.generic = None
                return px.exhausted(q, left)
        limits = self.policy.project_gpu_limits.get(q.project)
        end = px.now + src.time_limit_s
        reason = WaitReason.RESOURCES
        blocker: Hold | None = None
        allowed: list[str] = []
        for gpu_type in q.types:
            if limits is not None:
                cap = limits.get(gpu_type)
                if (
                    cap is not None
                    and self.project_use.get((q.project, gpu_type), 0) + (q.total) > cap
                ):
                    continue
            allowed.append(gpu_type)
            cls = self._class_for(q, gpu_type)
            for p, pcls in px.pools_for(q.project, gpu_type, q.gpn, end, cls):
                got, why, hold = self._try(q, p, pcls, end, px)
                if got:
                    return None
                if why is WaitReason.TOPOLOGY:
                    reason = why
                if hold is not None and blocker is None:
                    blocker = hold
        if not allowed:
            px.generic = None
            return px.quota(q, limits or {})
        if blocker is not None and reason is WaitReason.RESOURCES:
            reason = WaitReason.RESERVATION if blocker[4] >= 0 else WaitReason.PRIORITY
        generic = px.generic = px.blocked(q, reason, blocker)
        if q.opp or px.reserved >= self.policy.max_reservations:
            return generic
        return self._plan(q, allowed, reason, px)

    def _try(
        self, q: QueuedJob, p: int, cls: int, end: float, px: PassContext
    ) -> tuple[bool, WaitReason | None, Hold | None]:
        mkey = (p, q.gpn, q.nodes, q.src.max_blocks)
        failed = px.memo.get(mkey)
        if failed is not None and end >= failed[0]:
            return False, failed[1], failed[2]
        st = self.state
        pool = st.pools[p]
        now = px.now
        if q.nodes == 1:
            n, hold = place_single(st, pool, q.gpn, now, end)
            if n < 0:
                px.memo[mkey] = (end, WaitReason.RESOURCES, hold)
                return False, WaitReason.RESOURCES, hold
            parts = [(n, tuple(st.free[n][: q.gpn]))]
            px.single_starts += 1
        else:
            nodes, why, hold = place_gang(st, pool, q.nodes, now, end, q.src.max_blocks)
            if not nodes:
                px.memo[mkey] = (end, why, hold)
                return False, why, hold
            parts = [(n, tuple(st.free[n])) for n in nodes]
        self._start(q, parts, p, cls, px)
        return True, None, None

    def _start(
        self,
        q: QueuedJob,
        parts: list[tuple[int, tuple[int, ...]]],
        p: int,
        cls: int,
        px: PassContext,
    ) -> None:
        st = self.state
        src = q.src
        end = px.now + src.time_limit_s
        take = st.take_free
        for n, gpus in parts:
            take(n, len(gpus), src.job_id, end)
        borrowed = cls == BORROWED_CLASS
        rec = RunRec(
            src.job_id,
            q.project,
            self.factors.programme_of.get(q.project, ""),
            parts,
            px.now,
            end,
            src.qos,
            borrowed,
            None,
            st.pools[p].gpu_type,
            p,
        )
        self._account(rec, +1)
        names = st.name
        px.starts.append(
            Start(
                src.job_id,
                tuple(NodeGpus(names[n], gpus) for n, gpus in parts),
                qos=src.qos,
                borrowed=borrowed,
            )
        )
        if src.budget_gpu_seconds_left is not None and not q.opp:
            px.spent[q.project] = px.spent.get(q.project, 0.0) + q.gpu_seconds
        px.started.add(src.job_id)

    def _plan(self, q: QueuedJob, types: list[str], reason: WaitReason, px: PassContext) -> Wait:
        """Give a top blocked job its earliest start, preempting if that is the only way
        to start within the grace period, and hold those GPUs against later jobs."""
        st = self.state
        src = q.src
        length = float(src.time_limit_s)
        planner = px.planner
        best: tuple[float, int, list[int], int] = (INF, -1, [], 0)
        candidates: list[tuple[int, int]] = []
        for gpu_type in types:
            cls = self._class_for(q, gpu_type)
            for p, pcls in px.pools_for(q.project, gpu_type, q.gpn, px.now + length, cls):
                candidates.append((p, pcls))
                t, nodes, g = self._earliest(q, p, length, planner)
                if (t, p) < best[:2]:
                    best = (t, p, nodes, g)
        grace = self.policy.preemption_grace_s
        if best[0] > px.now + grace and px.preempt_attempts < self.policy.max_preemption_attempts:
            for p, pcls in candidates:
                pool = st.pools[p]
                if pcls <= OPPORTUNISTIC_CLASS or pool.preemptible <= 0:
                    continue
                px.preempt_attempts += 1
                if q.nodes == 1:
                    victims = plan_single(st, pool, q.gpn, self.running, pcls, px.now)
                else:
                    victims = plan_gang(st, pool, q.nodes, self.running, pcls, px.now)
                if victims:
                    self._preempt(victims, src.job_id, px)
                    t, nodes, g = self._earliest(q, p, length, planner)
                    if (t, p) < best[:2] or t <= px.now + grace:
                        best = (t, p, nodes, g)
                    break
        t, p, nodes, g = best
        if t == INF or not nodes:
            return px.never(q)
        for n in nodes:
            hold = (t, t + length, g, int(src.job_id), -1)
            st.add_hold(n, hold)
            px.holds.append((n, hold))
        px.reserved += 1
        return px.plan(q, reason, t, [st.name[n] for n in nodes], g)

    def _earliest(
        self, q: QueuedJob, p: int, length: float, planner: Planner
    ) -> tuple[float, list[int], int]:
        pool = self.state.pools[p]
        if q.nodes == 1:
            t, n = planner.earliest_single(pool, q.gpn, length)
            return t, ([n] if n >= 0 else []), q.gpn
        t, nodes = planner.earliest_gang(pool, q.nodes, length, q.src.max_blocks)
        return t, nodes, pool.size

    def _preempt(self, victims: list[RunRec], for_job: JobId, px: PassContext) -> None:
        st = self.state
        requeue_at = px.now + self.policy.preemption_grace_s
        for rec in victims:
            if rec.requeue_at is not None:
                continue
            st.pools[rec.pool].preemptible -= 1
            rec.requeue_at = requeue_at
            if requeue_at < rec.end:
                rec.end = requeue_at
            for n, _ in rec.parts:
                st.set_end(n, rec.job_id, rec.end)
                px.planner.touched_earlier(n)
            px.preemptions.append(
                Preemption(
                    rec.job_id,
                    for_job,
                    requeue_at,
                    f"requeued to make room for job {for_job}",
                )
            )
