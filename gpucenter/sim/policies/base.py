"""What a scheduling policy must offer the engine, and what the engine tells it.

The engine speaks to every policy in core terms (`PendingJob` in, `Start` out), so our policy
is the real core and the baselines are drop-in alternatives behind the same boundary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gpucenter.core import NodeSnapshot, PendingJob, Start
from gpucenter.domain.clock import Instant
from gpucenter.domain.ids import JobId, ProjectId


@dataclass(frozen=True, slots=True)
class Workload:
    """Who is who in a replay: projects (tenants) by applicant type, and entitled shares."""

    applicant_of: Mapping[ProjectId, str]
    shares: Mapping[str, float] = field(default_factory=dict)
    reserve: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PassOutcome:
    """Starts, and running jobs to stop and requeue (preemptive policies only)."""

    starts: Sequence[Start]
    preempt: Sequence[JobId] = ()


class SimPolicy(Protocol):
    """A scheduling policy the engine can drive."""

    name: str

    def prepare(self, nodes: Sequence[NodeSnapshot], workload: Workload) -> None: ...

    def submit(self, job: PendingJob) -> None: ...

    def finish(self, job_id: JobId, now: Instant) -> None: ...

    def run_pass(self, now: Instant) -> PassOutcome: ...

    def next_wakeup(self, now: Instant) -> Instant | None:
        """A time the policy wants a pass even if nothing arrives or ends (or None)."""
        ...
