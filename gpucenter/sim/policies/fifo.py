"""Baselines on `FreeMap`: strict FIFO, Slurm-like multifactor with EASY backfill, and
Tiresias-style least attained service (discretised, preemptive)."""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence

from gpucenter.core import NodeGpus, NodeSnapshot, PendingJob, Start
from gpucenter.domain.clock import Instant
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.sim.policies.base import PassOutcome, Workload
from gpucenter.sim.policies.freemap import FreeMap


class _Base:
    name = "base"

    def __init__(self) -> None:
        self.free: FreeMap | None = None
        self.running: dict[JobId, tuple[tuple[NodeGpus, ...], PendingJob, Instant]] = {}

    def prepare(self, nodes: Sequence[NodeSnapshot], workload: Workload) -> None:
        self.free = FreeMap(nodes)

    def _try_start(self, job: PendingJob, now: Instant) -> Start | None:
        assert self.free is not None
        got = self.free.find(job.request)
        if got is None:
            return None
        placement = self.free.take(got[1], job.request.gpus_per_node)
        self.running[job.job_id] = (placement, job, now)
        return Start(job.job_id, placement)

    def finish(self, job_id: JobId, now: Instant) -> None:
        assert self.free is not None
        got = self.running.pop(job_id, None)
        if got is not None:
            self.free.give_back(got[0])

    def next_wakeup(self, now: Instant) -> Instant | None:
        return None


class FifoPolicy(_Base):
    """First come, first served; the head of the queue blocks everything behind it."""

    name = "fifo"

    def __init__(self) -> None:
        super().__init__()
        self.queue: list[PendingJob] = []
        self.head = 0

    def submit(self, job: PendingJob) -> None:
        self.queue.append(job)

    def run_pass(self, now: Instant) -> PassOutcome:
        starts: list[Start] = []
        q = self.queue
        while self.head < len(q):
            s = self._try_start(q[self.head], now)
            if s is None:
                break
            starts.append(s)
            self.head += 1
        if self.head > 4096:
            del q[: self.head]
            self.head = 0
        return PassOutcome(starts)


class SlurmLikePolicy(_Base):
    """Slurm's multifactor priority (age + fair share by tenant + size) with EASY backfill.

    In priority order jobs start while they fit; the first that does not gets a reservation
    at the earliest time enough GPUs are free (from running jobs' time limits); later jobs
    start only if they fit now and end before that time. `bf_depth` bounds the look-ahead
    like Slurm's bf_max_job_test.
    """

    name = "slurm"

    def __init__(self, bf_depth: int = 100, half_life_s: float = 7 * 24 * 3600.0) -> None:
        super().__init__()
        self.pending: dict[JobId, PendingJob] = {}
        self.bf_depth = bf_depth
        self.half_life = half_life_s
        self.usage: dict[ProjectId, float] = {}
        self.total_gpus = 1

    def prepare(self, nodes: Sequence[NodeSnapshot], workload: Workload) -> None:
        super().prepare(nodes, workload)
        self.total_gpus = max(1, sum(n.gpu_count for n in nodes))

    def submit(self, job: PendingJob) -> None:
        self.pending[job.job_id] = job

    def finish(self, job_id: JobId, now: Instant) -> None:
        got = self.running.get(job_id)
        if got is not None:
            _, job, since = got
            decay = 0.5 ** (max(0.0, now - since) / self.half_life)
            self.usage[job.project_id] = self.usage.get(
                job.project_id, 0.0
            ) * decay + job.request.total_gpus * (now - since)
        super().finish(job_id, now)

    def _priority(self, job: PendingJob, now: Instant, mean_use: float) -> float:
        age = min(1.0, (now - job.submitted_at) / (7 * 24 * 3600.0))
        use = self.usage.get(job.project_id, 0.0)
        fair = 2.0 ** (-use / mean_use) if mean_use > 0 else 1.0
        size = job.request.total_gpus / self.total_gpus
        return 1000.0 * age + 10_000.0 * fair + 500.0 * size

    def run_pass(self, now: Instant) -> PassOutcome:
        assert self.free is not None
        if not self.pending:
            return PassOutcome(())
        mean_use = sum(self.usage.values()) / max(1, len(self.usage))
        order = sorted(
            self.pending.values(),
            key=lambda j: (-self._priority(j, now, mean_use), j.submitted_at, j.job_id),
        )
        starts: list[Start] = []
        shadow: float | None = None
        for n, job in enumerate(order):
            if shadow is not None and n > self.bf_depth:
                break
            if shadow is not None and now + job.time_limit_s > shadow:
                continue
            s = self._try_start(job, now)
            if s is not None:
                starts.append(s)
                del self.pending[job.job_id]
            elif shadow is None:
                shadow = self._shadow_time(job, now)
        return PassOutcome(starts)

    def _shadow_time(self, job: PendingJob, now: Instant) -> float:
        """Earliest time enough GPUs are free for `job`, counting GPUs (not shapes)."""
        assert self.free is not None
        need = job.request.total_gpus - self.free.free_gpus
        ends = sorted(
            (since + j.time_limit_s, j.request.total_gpus) for _, j, since in self.running.values()
        )
        for end, gpus in ends:
            need -= gpus
            if need <= 0:
                return end
        return float("inf")


class LasPolicy(_Base):
    """Tiresias' discretised two-dimensional least-attained-service (2D-LAS).

    Attained service is GPUs x time run so far. Jobs sit in queues by attained service
    (`thresholds`, GPU-seconds); lower queues first, FIFO inside a queue. Every `quantum_s`
    running jobs that have crossed into a lower-priority queue are preempted (requeued with
    their remaining work) when a higher-priority job waits for their GPUs.
    """

    name = "las"

    def __init__(
        self, thresholds: Sequence[float] = (3600.0 * 8, 3600.0 * 64), quantum_s: float = 600.0
    ) -> None:
        super().__init__()
        self.thresholds = tuple(thresholds)
        self.quantum = quantum_s
        self.pending: dict[JobId, PendingJob] = {}
        self.attained: dict[JobId, float] = {}
        self.last_tick = 0.0

    def _queue(self, jid: JobId) -> int:
        return bisect.bisect_right(self.thresholds, self.attained.get(jid, 0.0))

    def submit(self, job: PendingJob) -> None:
        self.pending[job.job_id] = job

    def finish(self, job_id: JobId, now: Instant) -> None:
        got = self.running.get(job_id)
        if got is not None:
            _, job, since = got
            self.attained[job_id] = self.attained.get(job_id, 0.0) + job.request.total_gpus * (
                now - since
            )
        super().finish(job_id, now)

    def run_pass(self, now: Instant) -> PassOutcome:
        assert self.free is not None
        tick = now - self.last_tick >= self.quantum
        if tick:
            self.last_tick = now
        order = sorted(
            self.pending.values(), key=lambda j: (self._queue(j.job_id), j.submitted_at, j.job_id)
        )
        starts: list[Start] = []
        blocked: PendingJob | None = None
        for job in order:
            s = self._try_start(job, now)
            if s is not None:
                starts.append(s)
                del self.pending[job.job_id]
            elif blocked is None:
                blocked = job
        preempt: list[JobId] = []
        if tick and blocked is not None:
            preempt = self._victims(blocked, now)
        return PassOutcome(starts, preempt)

    def _victims(self, job: PendingJob, now: Instant) -> list[JobId]:
        """Running jobs of a strictly lower-priority queue, most attained first, until the
        blocked job's GPUs are covered."""
        assert self.free is not None
        q = self._queue(job.job_id)
        cands = []
        for jid, (_, j, since) in self.running.items():
            att = self.attained.get(jid, 0.0) + j.request.total_gpus * (now - since)
            if bisect.bisect_right(self.thresholds, att) > q:
                cands.append((-att, int(jid), j.request.total_gpus))
        heapq.heapify(cands)
        need = job.request.total_gpus - self.free.free_gpus
        out: list[JobId] = []
        while need > 0 and cands:
            _, jid_i, gpus = heapq.heappop(cands)
            out.append(JobId(jid_i))
            need -= gpus
        return out if need <= 0 else []

    def next_wakeup(self, now: Instant) -> Instant | None:
        return self.last_tick + self.quantum if self.pending and self.running else None
