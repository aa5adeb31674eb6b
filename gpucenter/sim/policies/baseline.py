"""What every baseline policy shares: free GPUs on a `FreeMap` and its running jobs.

The baselines are what the literature describes (FIFO, EASY backfill, Slurm-like
multifactor, Tiresias' LAS), written on their own small placement so that a comparison with
the core measures the policy, not a shared implementation.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpucenter.core import NodeGpus, NodeSnapshot, PendingJob, Start
from gpucenter.domain.clock import Instant
from gpucenter.domain.ids import JobId
from gpucenter.sim.policies.base import Workload
from gpucenter.sim.policies.freemap import FreeMap


class BaselinePolicy:
    """Running jobs (placement, job, start instant) over a `FreeMap`."""

    name = "base"

    def __init__(self) -> None:
        self.free: FreeMap | None = None
        self.running: dict[JobId, tuple[tuple[NodeGpus, ...], PendingJob, Instant]] = {}

    def prepare(self, nodes: Sequence[NodeSnapshot], workload: Workload) -> None:
        self.free = FreeMap(nodes)

    def _start_on(self, job: PendingJob, nodes: list[int], now: Instant) -> Start:
        assert self.free is not None
        placement = self.free.take(nodes, job.request.gpus_per_node)
        self.running[job.job_id] = (placement, job, now)
        return Start(job.job_id, placement)

    def _try_start(self, job: PendingJob, now: Instant) -> Start | None:
        assert self.free is not None
        got = self.free.find(job.request)
        if got is None:
            return None
        return self._start_on(job, got[1], now)

    def finish(self, job_id: JobId, now: Instant) -> None:
        assert self.free is not None
        got = self.running.pop(job_id, None)
        if got is not None:
            self.free.give_back(got[0])

    def next_wakeup(self, now: Instant) -> Instant | None:
        return None
