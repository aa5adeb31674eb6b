"""Tiresias' discretised two-dimensional least attained service (2D-LAS), preemptive.

Attained service is GPUs x time run so far (both dimensions: a wide job attains service
faster). Jobs sit in queues by attained service (`thresholds`, GPU-seconds); lower queues
first, FIFO (by submission) inside a queue. Every `quantum_s` the first job that cannot
start may preempt running jobs of strictly later queues, most attained first, when that
frees enough GPUs for it. It needs no job durations at all: that is its point.

Two rules keep the replay honest. A victim is never a job started in the same pass (it has
attained nothing since, and preempting it would launch and kill it in one instant: a
replay once crashed on exactly that). And the engine credits each run's own length to the
job, so that a job preempted twice does not lose or gain work (`tests/sim` checks that
every job's GPU-seconds equal its duration x GPUs on every replay).
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence

from gpucenter.core import PendingJob, Start
from gpucenter.domain.clock import Instant
from gpucenter.domain.ids import JobId
from gpucenter.sim.policies.base import PassOutcome
from gpucenter.sim.policies.baseline import BaselinePolicy


class LasPolicy(BaselinePolicy):
    """2D-LAS with `thresholds` (GPU-seconds) between queues and a preemption quantum."""

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
        blocked job's GPUs are covered; none started at `now` (this very pass)."""
        assert self.free is not None
        q = self._queue(job.job_id)
        cands = []
        for jid, (_, j, since) in self.running.items():
            if since >= now:
                continue
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
