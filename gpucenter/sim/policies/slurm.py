"""Slurm's multifactor priority (age + fair share by tenant + size) with EASY-style backfill.

A reference for what a stock Slurm site would do with the same jobs; the matrix's EASY
baseline (`easy.py`) is the plain FIFO + one reservation form.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpucenter.core import NodeSnapshot, PendingJob, Start
from gpucenter.domain.clock import Instant
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.sim.policies.base import PassOutcome, Workload
from gpucenter.sim.policies.baseline import BaselinePolicy


class SlurmLikePolicy(BaselinePolicy):
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
