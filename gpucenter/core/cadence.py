"""When a pass is a backfill pass: one rule for the server loop and the simulator.

Slurm runs its main scheduler (the top of the queue, in strict order) on every event and
its backfill scheduler every `bf_interval`; the core offers both (`Scheduler.run_pass(now,
backfill=...)`). Which one a pass is must be decided the same way wherever the core runs,
or the capacity planner would replay a different scheduler from the one the centre runs.
`PassCadence` is that decision, pure and deterministic (it reads only the `now` it is
given): a backfill pass when `Policies.backfill_interval_s` has passed since the last one
(always, with the default 0: every pass plans and backfills), else a quick pass; after a
quick pass that left jobs waiting, `wake_at` says when the next backfill pass is due so
that a caller with nothing else to do can come back then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpucenter.domain.clock import Instant


@dataclass(slots=True)
class PassCadence:
    """The instant of the last backfill pass and whether a later quick pass left work."""

    interval_s: float = 0.0
    last_backfill: Instant = -math.inf
    waiting: bool = False

    def backfill_now(self, now: Instant) -> bool:
        """Whether the pass at `now` is a backfill pass (and if so, note it)."""
        if now - self.last_backfill >= self.interval_s:
            self.last_backfill = now
            return True
        return False

    def after_pass(self, backfill: bool, jobs_waiting: bool) -> None:
        """Record what the pass just run left: a quick pass with jobs still waiting asks
        for the next backfill pass at the end of the interval."""
        self.waiting = not backfill and jobs_waiting

    def wake_at(self) -> Instant | None:
        """When a backfill pass is due for jobs a quick pass left waiting, or None."""
        return self.last_backfill + self.interval_s if self.waiting else None
