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
from collections.abc import Callable

from gpucenter.core.model import OPPORTUNISTIC, PendingJob
from gpucenter.core.policy import Policies
from gpucenter.domain.clock import Instant
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.ids import JobId, ProjectId, UserId

Key = tuple[int, float, float, int]
Sig = tuple[tuple[str, ...], int, int, int | None, bool]


class QueuedJob:
    """A pending job with what the pass needs precomputed."""

    __slots__ = (
        "budget",
        "const",
        "done",
        "gone",
        "gpn",
        "gpu_seconds",
        "id",
        "key",
        "limit",
        "nodes",
        "opp",
        "prio",
        "project",
        "sid",
        "sig",
        "src",
        "total",
        "types",
    )

    def __init__(self, src: PendingJob, const: float) -> None:
        req = src.request
        alts = req.alternatives
        self.types = (req.gpu_type, *alts) if alts else (req.gpu_type,)
        if alts and req.gpu_type in alts:
            self.types = req.acceptable_types
        self.src = src
        self.id = src.job_id
        self.project = src.project_id
        self.gpn = gpn = req.gpus_per_node
        self.nodes = nodes = req.nodes
        self.total = total = gpn * nodes
        self.limit = src.time_limit_s
        self.gpu_seconds = float(total * src.time_limit_s)
        self.budget = src.budget_gpu_seconds_left
        self.opp = opp = src.qos == OPPORTUNISTIC
        self.sig: Sig = (self.types, gpn, nodes, src.max_blocks, opp)
        self.const = const
        self.prio = 0.0
        self.key: Key = (0, 0.0, 0.0, 0)
        self.done = False
        self.gone = 1 << 62  # the pass in which the job started, or left before
        self.sid = 0  # small int standing for `sig`, hashed fast in the pass memo


_by_key = operator.attrgetter("key")


class JobQueue:
    """Pending jobs by id, and the same jobs in priority order."""

    def __init__(self, policy: Policies, cluster_gpus: int) -> None:
        self.policy = policy
        self.cluster_gpus = cluster_gpus
        self.pending: dict[JobId, QueuedJob] = {}
        self.order: list[QueuedJob] = []
        self.keys: list[Key] = []
        self.prio_at: Instant | None = None
        self._size_memo: dict[int, float] = {}
        self._sids: dict[Sig, int] = {}
        self.passes = 0
        self.done_count = 0

    def size_factor(self, total: int) -> float:
        f = self._size_memo.get(total)
        if f is None:
            if self.cluster_gpus <= 1:
                f = 1.0
            else:
                f = min(1.0, math.log1p(total) / math.log1p(self.cluster_gpus))
            self._size_memo[total] = f
        return f

    def submit(
        self, job: PendingJob, fair_share: Callable[[ProjectId, UserId | None], float]
    ) -> None:
        if job.job_id in self.pending:
            raise ValidationError("job_id", f"job {job.job_id} is already pending")
        w = self.policy.weights
        const = w.job_size * self.size_factor(job.request.total_gpus)
        const += w.qos * self.policy.qos_factors.get(job.qos, 0.0)
        q = QueuedJob(job, const)
        sid = self._sids.get(q.sig)
        if sid is None:
            sid = self._sids[q.sig] = len(self._sids)
        q.sid = sid
        self.pending[job.job_id] = q
        if self.prio_at is not None:
            self._prioritise([q], self.prio_at, fair_share)
            i = bisect.bisect_right(self.keys, q.key)
            self.keys.insert(i, q.key)
            self.order.insert(i, q)

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
        for q in jobs:
            src = q.src
            fkey = (src.project_id, src.user_id)
            fs = memo.get(fkey)
            if fs is None:
                fs = memo[fkey] = w_fs * fair_share(src.project_id, src.user_id)
            waited = now - src.submitted_at
            if waited <= 0:
                age = 0.0
            elif waited >= max_age:
                age = w_age
            else:
                age = w_age * waited / max_age
            prio = fs + age + q.const
            q.prio = prio
            q.key = (1 if q.opp else 0, -prio, src.submitted_at, src.job_id)

    def reprioritise(
        self, now: Instant, fair_share: Callable[[ProjectId, UserId | None], float]
    ) -> None:
        """Recompute every priority at `now` and re-sort."""
        jobs = list(self.pending.values())
        self._prioritise(jobs, now, fair_share)
        jobs.sort(key=_by_key)
        self.order = jobs
        self.keys = [q.key for q in jobs]
        self.prio_at = now

    def started(self, q: QueuedJob) -> None:
        q.done = True
        q.gone = self.passes
        self.done_count += 1
        if self.pending.get(q.id) is q:
            del self.pending[q.id]

    def compact(self, force: bool = False) -> None:
        """Drop started and withdrawn jobs from the ordered list, once they are more than a
        sixteenth of it (the walk skips them cheaply until then)."""
        if not force and self.done_count * 16 < len(self.order):
            return
        self.done_count = 0
        pending = self.pending
        for q in self.order:
            if q.done and pending.get(q.id) is q:
                del pending[q.id]
        self.order = [q for q in self.order if not q.done]
        self.keys = [q.key for q in self.order]
