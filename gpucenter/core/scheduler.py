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
shape that failed keeps failing for any later job that would end no earlier. Planned starts
are kept by the planner between passes and recomputed only when a node they depend on
changed (`timeline`, `plancache`).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence

from gpucenter.core.fairshare import NO_FAIR_SHARE, FairShare, FairShareFactors
from gpucenter.core.model import (
    NodeGpus,
    NodeSnapshot,
    PassResult,
    PendingJob,
    Preemption,
    RunningJob,
    Start,
    Wait,
)
from gpucenter.core.passes import PassContext, fragmentation, paused_gc
from gpucenter.core.placement import place_gang, place_single
from gpucenter.core.policy import DEFAULT_POLICIES, Policies
from gpucenter.core.preemption import plan_gang, plan_single
from gpucenter.core.priority import Breakdowns
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
from gpucenter.core.walk import Waits, Walk, quick_walk
from gpucenter.domain.clock import Instant
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import WaitReason
from gpucenter.domain.messages import msg

_src = operator.attrgetter("src")


class Scheduler:
    """Scheduling state between passes; see the module docstring."""

    def __init__(
        self,
        nodes: Sequence[NodeSnapshot],
        *,
        policy: Policies = DEFAULT_POLICIES,
        fair_share: FairShare | None = None,
        reservations: Sequence[AdvanceReservation] = (),
        running: Iterable[RunningJob] = (),
    ) -> None:
        self.policy = policy
        self.state = ClusterState(nodes, indexed=False)
        self.reservations = tuple(reservations)
        self.factors = self._factors(fair_share)
        self.running: dict[JobId, RunRec] = {}
        self.queue = JobQueue(policy, self.state.total_gpus)
        self.planner = Planner(self.state)
        # Usage is only needed where something reads it: per project and type for projects
        # with a GPU limit, per programme and type when programmes have entitlements.
        # Held projects are visited job by job like limited ones: their jobs wait alone.
        self._limited = frozenset(policy.project_gpu_limits) | frozenset(policy.project_holds)
        self._entitled = bool(policy.entitlements)
        self.project_use: dict[tuple[ProjectId, str], int] = {}
        self.programme_use: dict[tuple[str, str], int] = {}
        self._whole: dict[int, NodeGpus] = {}
        self.throwaway = False  # set by `schedule_pass`: no upkeep for later passes
        self._sync_solo()
        try:
            self._load(running)
        finally:
            self.state.end_bulk()  # the free-capacity indices, built once

    def _load(self, jobs: Iterable[RunningJob]) -> None:
        """`add_running` for a snapshot's running jobs (15,000 at 260,000 GPUs), with the
        common case inlined: each part holds its node's lowest free GPUs (single-node jobs,
        and gangs on whole nodes: 20,000 node parts at 260,000 GPUs)."""
        st = self.state
        index, free, run, version = st.index, st.free, st.run, st.version
        running = self.running
        add = self.add_running
        account = self._account
        programme_of = self.factors.programme_of
        for job in jobs:
            job_id = job.job_id
            if job_id in running:
                add(job)  # raises: already running
                continue
            parts: list[tuple[int, tuple[int, ...]]] = []
            count = 0
            for part in job.placement:
                n = index.get(part.node)
                gpus = tuple(part.gpus)
                k = len(gpus)
                if n is None or not k or job_id in run[n] or tuple(free[n][:k]) != gpus:
                    parts = []
                    break
                parts.append((n, gpus))
                count += k
            if not parts or (len(parts) > 1 and len({n for n, _ in parts}) != len(parts)):
                add(job)  # the general path: checks, messages, a node named twice
                continue
            end = job.ends_by
            for n, gpus in parts:
                k = len(gpus)
                free[n] = free[n][k:]
                run[n][job_id] = (end, k)
                version[n] += 1
            first = parts[0][0]
            account(
                RunRec(
                    job_id,
                    job.project_id,
                    programme_of.get(job.project_id, ""),
                    parts,
                    job.started_at,
                    end,
                    job.qos,
                    job.borrowed,
                    job.requeue_at,
                    st.gtype[first],
                    st.pool_of[first],
                    count,
                ),
                +1,
            )

    # -- deltas --------------------------------------------------------------------------
    def add_running(self, job: RunningJob) -> None:
        """Record a job that holds GPUs (from the snapshot, or started by the services)."""
        st = self.state
        job_id = job.job_id
        if job_id in self.running:
            # English on purpose: the services add each running job once (unique job ids)
            raise ValidationError("running", f"job {job_id} is already running")
        index = st.index
        parts: list[tuple[int, tuple[int, ...]]] = []
        gpus = 0
        for part in job.placement:
            n = index.get(part.node)
            if n is None:
                raise ValidationError.about(
                    "placement", msg("error.unknown_node", node=repr(part.node))
                )
            parts.append((n, tuple(part.gpus)))
            gpus += len(part.gpus)
        if not parts:
            # English on purpose: the services never record a running job without a placement
            raise ValidationError("placement", f"running job {job_id} holds no GPUs")
        end = job.ends_by
        for n, held in parts:
            st.take(n, held, job_id, end)
        first = parts[0][0]
        rec = RunRec(
            job_id,
            job.project_id,
            self.factors.programme_of.get(job.project_id, ""),
            parts,
            job.started_at,
            end,
            job.qos,
            job.borrowed,
            job.requeue_at,
            st.gtype[first],
            st.pool_of[first],
            gpus,
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
        if rec.project in self._limited:
            key = (rec.project, rec.gpu_type)
            self.project_use[key] = self.project_use.get(key, 0) + sign * rec.gpus
        if rec.cls == ENTITLED_CLASS:
            if self._entitled:
                pkey = (rec.programme, rec.gpu_type)
                self.programme_use[pkey] = self.programme_use.get(pkey, 0) + sign * rec.gpus
        elif rec.requeue_at is None:
            self.state.pools[rec.pool].preemptible += sign

    def submit(self, job: PendingJob) -> None:
        """Queue a job; it is ordered by the priority computed at the last recalculation."""
        self.queue.submit(job, self.factors.factor)

    def submit_all(self, jobs: Iterable[PendingJob]) -> None:
        """`submit` each job; before the first pass, in one bulk load."""
        if self.queue.prio_at is None and not self.queue.order:
            self.queue.load(jobs)
        else:
            for job in jobs:
                self.submit(job)

    def withdraw(self, job_id: JobId) -> None:
        """A pending job left the queue (cancelled, or started outside this scheduler)."""
        self.queue.withdraw(job_id)

    def _factors(self, fair_share: FairShare | None) -> FairShareFactors:
        if fair_share is None:
            return NO_FAIR_SHARE
        return self.policy.fair_share.factors(fair_share)

    def set_fair_share(self, fair_share: FairShare | None) -> None:
        """New decayed usage: priorities are recomputed at the next pass."""
        self.factors = self._factors(fair_share)
        self.queue.prio_at = None

    def set_reservations(self, reservations: Sequence[AdvanceReservation]) -> None:
        self.reservations = tuple(reservations)
        self._sync_solo()

    def _sync_solo(self) -> None:
        """Projects whose jobs the walk always visits one by one: limited projects and
        members of any reservation (they may be special in a pass)."""
        projects = set(self._limited)
        for resv in self.reservations:
            projects |= resv.projects
        self.queue.set_solo_projects(frozenset(projects))

    # -- the pass ------------------------------------------------------------------------
    def run_pass(self, now: Instant, *, backfill: bool = True) -> PassResult:
        """Decide what starts now, what is preempted, and why every other job waits.

        Started jobs become running in this scheduler at `now`; preempted jobs keep their
        GPUs until their requeue instant, when the services call `finish`.

        With `backfill` false, a quick pass, as Slurm runs its main scheduler on each event
        and its backfill scheduler every `bf_interval`: only the top of the queue, in strict
        priority order per GPU type (`quick_walk`), no planned starts, no preemption, and
        waits only for the jobs it looked at (the others keep what the last backfill pass
        said). The first pass of a scheduler that is kept is always a backfill pass; a
        throw-away one (`schedule_pass`, the server's) does what it is asked.
        """
        with paused_gc():
            if backfill or (self.queue.prio_at is None and not self.throwaway):
                return self._run_pass(now)
            return self._quick_pass(now)

    def _open_pass(self, now: Instant) -> tuple[PassContext, dict[int, Hold], Instant, int]:
        """What every pass does first: priorities recomputed when due, advance-reservation
        holds put on (returned, to be taken off at the end), a fresh context, and the pass
        number. Returns (context, holds, the instant priorities were computed at, number)."""
        jq = self.queue
        if jq.prio_at is None or now - jq.prio_at >= self.policy.priority_recalc_s:
            jq.reprioritise(now, self.factors.factor, ranks=not self.throwaway)
        prio_at = jq.prio_at if jq.prio_at is not None else now
        adv_holds, moved = sync_reservations(self.state, self.reservations, now)
        if moved:
            self._recount_pools()
        jq.passes += 1
        return PassContext(now, self.reservations, self.state), adv_holds, prio_at, jq.passes

    def _quick_pass(self, now: Instant) -> PassResult:
        st = self.state
        jq = self.queue
        px, adv_holds, prio_at, pass_no = self._open_pass(now)
        px.reserved = self.policy.max_reservations  # no planned starts: `_consider` waits
        queue = jq.order
        started, looked = quick_walk(jq, px, self._consider, self.policy.quick_depth, pass_no)
        for n, hold in adv_holds.items():
            st.remove_hold(n, hold)
        jq.done_count += started
        jq.shared = True
        waits = Waits(px.waits, [], queue, pass_no)
        result = PassResult(
            starts=tuple(px.starts),
            waits=waits,
            priorities=Breakdowns.for_pass(
                queue, pass_no, prio_at, self.factors, self.policy, st.total_gpus
            ),
            opportunistic=frozenset(s.job_id for s in px.starts if s.preemptible),
            fragmentation=fragmentation(st, queue[:looked], waits),
        )
        jq.compact()
        return result

    def _run_pass(self, now: Instant) -> PassResult:
        st = self.state
        jq = self.queue
        px, adv_holds, prio_at, pass_no = self._open_pass(now)
        planner = self.planner
        planner.begin(now, adv_holds)
        px.planner = planner
        special = set(self._limited)
        for _, resv in px.active:
            special |= resv.projects
        queue = jq.order
        walk = Walk(jq, px, self._consider, special, self.policy.max_reservations, pass_no)
        started, segments = walk.run(bulk=not self.throwaway)
        # The planner's heap keys ignore holds, so dropping a hold leaves them exact: the
        # nodes' entries are only out of date (version) and are refreshed when reached.
        for n, hold in px.holds:
            st.remove_hold(n, hold)
        for n, hold in adv_holds.items():
            st.remove_hold(n, hold)
        jq.done_count += started
        if self.throwaway:
            waits = Waits.final(px.waits, segments, queue)
            frag = fragmentation(st, queue, waits)
            priorities = Breakdowns.for_final_pass(
                list(map(_src, queue)), prio_at, self.factors, self.policy, st.total_gpus
            )
        else:
            listed = queue  # not copied: the queue copies it before its next change
            jq.shared = True
            waits = Waits(px.waits, segments, listed, pass_no)
            frag = fragmentation(st, queue, waits)
            priorities = Breakdowns.for_pass(
                listed, pass_no, prio_at, self.factors, self.policy, st.total_gpus
            )
            jq.compact()
        return PassResult(
            starts=tuple(px.starts),
            waits=waits,
            priorities=priorities,
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
        return ENTITLED_CLASS if used + q.shape.total <= owned else BORROWED_CLASS

    def _consider(self, q: QueuedJob, px: PassContext) -> Wait | None:
        held = self.policy.project_holds.get(q.project)
        if held is not None:
            px.generic = None
            return Wait(WaitReason.HELD, held)
        shape = q.shape
        budget = q.budget
        if budget is not None and not q.opp:
            left = budget - px.spent.get(q.project, 0.0)
            if left < q.gpu_seconds:
                px.generic = None
                return px.exhausted(q, left)
        limits = self.policy.project_gpu_limits.get(q.project)
        end = px.now + q.limit
        reason = WaitReason.RESOURCES
        blocker: Hold | None = None
        allowed: list[str] = []
        for gpu_type in shape.types:
            if limits is not None:
                cap = limits.get(gpu_type)
                if (
                    cap is not None
                    and self.project_use.get((q.project, gpu_type), 0) + shape.total > cap
                ):
                    continue
            allowed.append(gpu_type)
            cls = self._class_for(q, gpu_type)
            for p, pcls in px.pools_for(q.project, gpu_type, shape.gpn, end, cls):
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
        shape = q.shape
        gpn = shape.gpn
        mkey = (p, gpn, shape.nodes, shape.max_blocks)
        failed = px.memo.get(mkey)
        if failed is not None and end >= failed[0]:
            return False, failed[1], failed[2]
        st = self.state
        pool = st.pools[p]
        if shape.nodes == 1:
            n, hold = place_single(st, pool, gpn, px.now, end)
            if n < 0:
                px.memo[mkey] = (end, WaitReason.RESOURCES, hold)
                return False, WaitReason.RESOURCES, hold
            nodes = [n]
        else:
            nodes, why, hold = place_gang(st, pool, shape.nodes, px.now, end, shape.max_blocks)
            if not nodes:
                px.memo[mkey] = (end, why, hold)
                return False, why, hold
            gpn = pool.size
        self._start(q, nodes, gpn, p, cls, px)
        return True, None, None

    def _start(
        self, q: QueuedJob, nodes: list[int], gpn: int, p: int, cls: int, px: PassContext
    ) -> None:
        """Take the `gpn` lowest free GPUs of each node and record the start. Per start this
        is the pass's hottest code (19,000 starts at 260,000 GPUs), hence the flat style."""
        st = self.state
        src = q.src
        job_id = q.id
        now = px.now
        end = now + q.limit
        free, size, names, whole = st.free, st.size, st.name, self._whole
        take = st.take_free
        tuples = px.tuples
        parts: list[tuple[int, tuple[int, ...]]] = []
        placement: list[NodeGpus] = []
        for n in nodes:
            if gpn == size[n] and len(free[n]) == gpn:
                part = whole.get(n)  # the whole node: one shared, immutable value
                if part is None:
                    part = whole[n] = NodeGpus(names[n], tuple(free[n]))
            else:
                gpus = tuple(free[n][:gpn])
                # Shared per pass: a few hundred distinct index tuples for 19,000 starts.
                part = NodeGpus(names[n], tuples.setdefault(gpus, gpus))
            take(n, gpn, job_id, end)
            parts.append((n, part.gpus))
            placement.append(part)
        borrowed = cls == BORROWED_CLASS
        project = q.project
        rec = RunRec(
            job_id,
            project,
            self.factors.programme_of.get(project, "") if self._entitled else "",
            parts,
            now,
            end,
            src.qos,
            borrowed,
            None,
            st.pools[p].gpu_type,
            p,
            gpn * len(nodes),
        )
        self._account(rec, +1)
        px.starts.append(Start(job_id, tuple(placement), src.qos, borrowed))
        if q.budget is not None and not q.opp:
            px.spent[project] = px.spent.get(project, 0.0) + q.gpu_seconds

    def _plan(self, q: QueuedJob, types: list[str], reason: WaitReason, px: PassContext) -> Wait:
        """Give a top blocked job its earliest start, preempting if that is the only way
        to start within the grace period, and hold those GPUs against later jobs."""
        st = self.state
        src = q.src
        shape = q.shape
        length = float(q.limit)
        planner = px.planner
        best: tuple[float, int, list[int], int] = (INF, -1, [], 0)
        candidates: list[tuple[int, int]] = []
        for gpu_type in types:
            cls = self._class_for(q, gpu_type)
            for p, pcls in px.pools_for(q.project, gpu_type, shape.gpn, px.now + length, cls):
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
                if shape.nodes == 1:
                    victims = plan_single(st, pool, shape.gpn, self.running, pcls, px.now)
                else:
                    victims = plan_gang(st, pool, shape.nodes, self.running, pcls, px.now)
                if victims:
                    self._preempt(victims, src.job_id, px)
                    t, nodes, g = self._earliest(q, p, length, planner)
                    if (t, p) < best[:2] or t <= px.now + grace:
                        best = (t, p, nodes, g)
                    break
        t, p, nodes, g = best
        if t == INF or not nodes:
            return px.never(q)
        hold = (t, t + length, g, int(src.job_id), -1)
        for n in nodes:
            st.add_hold(n, hold)
            px.holds.append((n, hold))
        planner.note_holds(st.pools[p], hold, tuple(nodes))
        px.reserved += 1
        return px.plan(q, reason, t, [st.name[n] for n in nodes], g)

    def _earliest(
        self, q: QueuedJob, p: int, length: float, planner: Planner
    ) -> tuple[float, list[int], int]:
        pool = self.state.pools[p]
        shape = q.shape
        if shape.nodes == 1:
            t, n = planner.earliest_single(pool, shape.gpn, length, int(q.id))
            return t, ([n] if n >= 0 else []), shape.gpn
        t, nodes = planner.earliest_gang(pool, shape.nodes, length, shape.max_blocks, int(q.id))
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
