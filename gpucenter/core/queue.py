"""The pending queue in priority order, kept sorted between passes.

Priorities are recomputed for the whole queue at most every `priority_recalc_s` (Slurm's
PriorityCalcPeriod); in between, new jobs are inserted in order by bisection and started
jobs are dropped when the pass compacts the list. Per-job values the pass needs (its shape
signature, GPU-seconds, constant priority part) are computed once, at submission.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import filterfalse

from gpucenter.core.job_size import small_factor
from gpucenter.core.model import OPPORTUNISTIC, PendingJob
from gpucenter.core.policy import Policies
from gpucenter.domain.clock import Instant
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.ids import JobId, ProjectId, UserId

Key = tuple[int, float, float, int]
Sig = tuple[tuple[str, ...], int, int, int | None, bool]
ShapeKey = tuple[str, tuple[str, ...], int, int, int | None, str]


class Shape:
    """What every job of one request shape shares: accepted types, geometry, the constant
    part of the priority (size and QoS), and `sid`, a small int standing for the shape in
    the pass's failed-shape memo. A 100,000-job queue has a few hundred shapes, so this is
    computed per shape, not per job."""

    __slots__ = ("const", "gpn", "max_blocks", "nodes", "opp", "sid", "total", "types")

    def __init__(
        self, types: tuple[str, ...], gpn: int, nodes: int, max_blocks: int | None, opp: bool
    ) -> None:
        self.types = types
        self.gpn = gpn
        self.nodes = nodes
        self.total = gpn * nodes
        self.max_blocks = max_blocks
        self.opp = opp
        self.const = 0.0
        self.sid = 0


class QueuedJob:
    """A pending job as the queue keeps it: its shape, and what the walk reads per job."""

    __slots__ = (
        "budget",
        "const",
        "done",
        "gone",
        "id",
        "limit",
        "opp",
        "prio",
        "project",
        "rank",
        "shape",
        "sid",
        "src",
    )

    def __init__(self, src: PendingJob, shape: Shape) -> None:
        self.src = src
        self.id = src.job_id
        self.project = src.project_id
        self.limit = src.time_limit_s
        self.budget = src.budget_gpu_seconds_left
        self.shape = shape
        self.sid = shape.sid
        self.opp = shape.opp
        self.prio = 0.0
        self.const = shape.const  # the constant part of the priority (+ the job's own)
        self.rank = 0.0  # increasing along `JobQueue.order`: a cheap queue position
        self.done = False
        self.gone = 1 << 62  # the pass in which the job started, or left before

    @property
    def total(self) -> int:
        return self.shape.total

    @property
    def gpu_seconds(self) -> float:
        return float(self.shape.total * self.limit)

    @property
    def key(self) -> Key:
        """The queue order: entitled before opportunistic, then priority, age and id."""
        return (1 if self.opp else 0, -self.prio, self.src.submitted_at, self.id)


_by_key = operator.attrgetter("key")
_by_prio = operator.attrgetter("prio")
_by_rank = operator.attrgetter("rank")
_by_opp = operator.attrgetter("opp")
_by_done = operator.attrgetter("done")

GroupKey = tuple[int, int]


def _order(jobs: list[QueuedJob]) -> list[QueuedJob]:
    """`jobs` sorted by `QueuedJob.key`, without building 100,000 key tuples.

    Sorting by a float is several times faster than by tuples, so: split entitled from
    opportunistic, sort each by -priority alone, and re-sort only the runs of equal priority
    by the full key (rare: the same project submitting in the same second). The runs are
    found by counting priorities and bisecting, not by a Python loop over every job.
    """
    out: list[QueuedJob] = []
    for group in ([q for q in jobs if not q.opp], [q for q in jobs if q.opp]):
        group.sort(key=_by_prio, reverse=True)  # stable; ties are re-sorted below anyway
        prios = [q.prio for q in group]
        if len(set(prios)) != len(prios):
            neg = [-p for p in prios]  # ascending, for bisect
            for p, count in Counter(prios).items():
                if count > 1:
                    i = bisect.bisect_left(neg, -p)
                    j = bisect.bisect_right(neg, -p)
                    group[i:j] = sorted(group[i:j], key=_by_key)
        out += group
    return out


class JobQueue:
    """Pending jobs by id, and the same jobs in priority order."""

    def __init__(self, policy: Policies, cluster_gpus: int) -> None:
        self.policy = policy
        self.cluster_gpus = cluster_gpus
        self.pending: dict[JobId, QueuedJob] = {}
        self.order: list[QueuedJob] = []
        # Whether `order` was handed out as a pass's listing (`Waits`, `Breakdowns` read it
        # later): it is then copied before it is changed in place, not copied every pass.
        self.shared = False
        self.prio_at: Instant | None = None
        self._shapes: dict[ShapeKey, Shape] = {}
        self._sids: dict[Sig, int] = {}
        self.passes = 0
        self.done_count = 0
        # Jobs in queue order per (shape id, time limit), for the walk's bulk answers; jobs
        # whose fate is their own (a budget, a limited or reserving project) in `solo`.
        # Built lazily; started and withdrawn jobs stay until the next rebuild or compaction.
        self.groups: dict[GroupKey, list[QueuedJob]] | None = None
        self.solo: list[QueuedJob] = []
        self.solo_projects: frozenset[ProjectId] = frozenset()

    def set_solo_projects(self, projects: frozenset[ProjectId]) -> None:
        if projects != self.solo_projects:
            self.solo_projects = projects
            self.groups = None

    def streams(self) -> tuple[dict[GroupKey, list[QueuedJob]], list[QueuedJob]]:
        """The per-(shape, time limit) lists and the solo list, in queue order."""
        groups = self.groups
        if groups is None:
            groups = self.groups = {}
            solo: list[QueuedJob] = []
            special = self.solo_projects
            get = groups.get
            for q in self.order:
                if q.done:
                    continue
                if q.budget is not None or q.project in special:
                    solo.append(q)
                    continue
                key = (q.sid, q.limit)
                members = get(key)
                if members is None:
                    groups[key] = [q]
                else:
                    members.append(q)
            self.solo = solo
        return groups, self.solo

    def _insert(self, q: QueuedJob) -> None:
        """Put a newly prioritised job in order, with a rank between its neighbours."""
        order = self.order
        if self.shared:
            order = self.order = order[:]
            self.shared = False
        i = bisect.bisect_right(order, q.key, key=_by_key)
        order.insert(i, q)
        if len(order) == 1:
            q.rank = 0.0
        elif i == 0:
            q.rank = order[1].rank - 1.0
        elif i == len(order) - 1:
            q.rank = order[i - 1].rank + 1.0
        else:
            lo, hi = order[i - 1].rank, order[i + 1].rank
            mid = (lo + hi) / 2
            if lo < mid < hi:
                q.rank = mid
            else:  # the gap is used up: renumber (same relative order)
                for j, x in enumerate(order):
                    x.rank = float(j)
        groups = self.groups
        if groups is not None:
            if q.budget is not None or q.project in self.solo_projects:
                bisect.insort(self.solo, q, key=_by_rank)
            else:
                members = groups.setdefault((q.sid, q.limit), [])
                bisect.insort(members, q, key=_by_rank)

    def _own_const(self, q: QueuedJob) -> None:
        """Add the constant priority part that is the job's own rather than its shape's:
        with `favor_small`, the size factor of its requested work (GPUs x time limit)."""
        w = self.policy.weights
        q.const += w.job_size * small_factor(q.shape.total, q.limit, self.cluster_gpus, w.max_age_s)

    def size_factor(self, total: int) -> float:
        if self.cluster_gpus <= 1:
            return 1.0
        return min(1.0, math.log1p(total) / math.log1p(self.cluster_gpus))

    def _shape(self, job: PendingJob) -> Shape:
        req = job.request
        alts = req.alternatives
        key = (req.gpu_type, alts, req.gpus_per_node, req.nodes, job.max_blocks, job.qos)
        shape = self._shapes.get(key)
        if shape is None:
            types = (req.gpu_type, *alts) if alts else (req.gpu_type,)
            if alts and req.gpu_type in alts:
                types = req.acceptable_types
            opp = job.qos == OPPORTUNISTIC
            shape = Shape(types, req.gpus_per_node, req.nodes, job.max_blocks, opp)
            w = self.policy.weights
            shape.const = 0.0 if w.favor_small else w.job_size * self.size_factor(shape.total)
            shape.const += w.qos * self.policy.qos_factors.get(job.qos, 0.0)
            sig = (types, shape.gpn, shape.nodes, shape.max_blocks, opp)
            sid = self._sids.get(sig)
            if sid is None:
                sid = self._sids[sig] = len(self._sids)
            shape.sid = sid
            self._shapes[key] = shape
        return shape

    def submit(
        self, job: PendingJob, fair_share: Callable[[ProjectId, UserId | None], float]
    ) -> None:
        if job.job_id in self.pending:
            # English on purpose: the services load each job once (ids are unique)
            raise ValidationError("job_id", f"job {job.job_id} is already pending")
        q = QueuedJob(job, self._shape(job))
        if self.policy.weights.favor_small:
            self._own_const(q)
        self.pending[job.job_id] = q
        if self.prio_at is not None:
            self._prioritise([q], self.prio_at, fair_share)
            self._insert(q)

    def load(self, jobs: Iterable[PendingJob]) -> None:
        """`submit` for many jobs before the first pass (nothing is ordered yet)."""
        if self.prio_at is not None:
            raise ValueError("load() is for an empty, not yet ordered queue")
        pending = self.pending
        shapes = self._shapes
        shape_of = self._shape
        own = self._own_const if self.policy.weights.favor_small else None
        for job in jobs:
            jid = job.job_id
            if jid in pending:
                # English on purpose: the services load each job once (ids are unique)
                raise ValidationError("job_id", f"job {jid} is already pending")
            req = job.request
            shape = shapes.get(
                (
                    req.gpu_type,
                    req.alternatives,
                    req.gpus_per_node,
                    req.nodes,
                    job.max_blocks,
                    job.qos,
                )
            )
            q = QueuedJob(job, shape if shape is not None else shape_of(job))
            if own is not None:
                own(q)
            pending[jid] = q

    def withdraw(self, job_id: JobId) -> None:
        q = self.pending.pop(job_id, None)
        if q is not None:
            q.done = True
            q.gone = self.passes
            self.done_count += 1

    def _prioritise(
        self,
        jobs: list[QueuedJob],
        now: Instant,
        fair_share: Callable[[ProjectId, UserId | None], float],
    ) -> None:
        w = self.policy.weights
        w_fs, w_age, max_age = w.fair_share, w.age, w.max_age_s
        memo: dict[tuple[ProjectId, UserId | None], float] = {}
        by_project: dict[ProjectId, float] = {}
        for q in jobs:
            src = q.src
            user = src.user_id
            if user is None:
                fs = by_project.get(q.project)
                if fs is None:
                    fs = by_project[q.project] = w_fs * fair_share(q.project, None)
            else:
                fkey = (q.project, user)
                fs = memo.get(fkey)
                if fs is None:
                    fs = memo[fkey] = w_fs * fair_share(q.project, user)
            waited = now - src.submitted_at
            if waited <= 0:
                age = 0.0
            elif waited >= max_age:
                age = w_age
            else:
                age = w_age * waited / max_age
            q.prio = fs + age + q.const

    def reprioritise(
        self,
        now: Instant,
        fair_share: Callable[[ProjectId, UserId | None], float],
        *,
        ranks: bool = True,
    ) -> None:
        """Recompute every priority at `now` and re-sort. Ranks (queue positions for the
        bulk walk and insertions) are skipped with `ranks=False`: a one-off pass walks the
        queue job by job and inserts nothing."""
        jobs = list(self.pending.values())
        self._prioritise(jobs, now, fair_share)
        self.prio_at = now
        if ranks and self.groups is not None and self._still_ordered():
            return  # nothing moved: the ranks and the per-shape lists stand as they are
        order = self.order = _order(jobs)
        self.shared = False
        self.groups = None
        if ranks:
            # The ranks, and the lists `streams` would build from them, in one loop.
            groups: dict[GroupKey, list[QueuedJob]] = {}
            solo: list[QueuedJob] = []
            special = self.solo_projects
            get = groups.get
            for i, q in enumerate(order):
                q.rank = i
                if q.budget is not None or q.project in special:
                    solo.append(q)
                    continue
                key = (q.sid, q.limit)
                members = get(key)
                if members is None:
                    groups[key] = [q]
                else:
                    members.append(q)
            self.groups = groups
            self.solo = solo

    def _still_ordered(self) -> bool:
        """Whether the listed order is still the order of the new priorities, so that a
        recalculation can keep the ranks and per-shape lists (touching 100,000 entries in
        priority order is the costly part of a re-sort). Common when only time moved: ages
        grow alike for every job not yet at the age cap, and unchanged fair-share factors
        shift nothing. Strictly decreasing priorities within the entitled part and within the
        opportunistic part prove the order; any tie goes to the full re-sort, which breaks
        ties by the rest of the key."""
        live = self.order if self.done_count == 0 else list(filterfalse(_by_done, self.order))
        if len(live) != len(self.pending):
            return False
        split = bisect.bisect_left(live, True, key=_by_opp)
        prios = list(map(_by_prio, live))
        entitled, opportunistic = prios[:split], prios[split:]
        return all(map(operator.gt, entitled, entitled[1:])) and all(
            map(operator.gt, opportunistic, opportunistic[1:])
        )

    def compact(self, force: bool = False) -> None:
        """Drop started and withdrawn jobs from the ordered list, once they are more than a
        sixteenth of it (the walk skips them cheaply until then). They already left
        `pending` when they were marked done."""
        if not force and self.done_count * 16 < len(self.order):
            return
        self.done_count = 0
        self.order = [q for q in self.order if not q.done]
        self.shared = False
        groups = self.groups
        if groups is not None:
            for key, members in list(groups.items()):
                kept = [q for q in members if not q.done]
                if kept:
                    groups[key] = kept
                else:
                    del groups[key]
            self.solo = [q for q in self.solo if not q.done]
