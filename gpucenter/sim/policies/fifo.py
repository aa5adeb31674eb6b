"""Strict first come, first served: the head of the queue blocks everything behind it."""

from __future__ import annotations

from gpucenter.core import PendingJob, Start
from gpucenter.domain.clock import Instant
from gpucenter.sim.policies.base import PassOutcome
from gpucenter.sim.policies.baseline import BaselinePolicy


class FifoPolicy(BaselinePolicy):
    """First come, first served, no backfill: the reference every other policy is read
    against (and the one that sets the matrix's load levels)."""

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
