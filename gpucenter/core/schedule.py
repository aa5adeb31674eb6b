"""`schedule_pass`: one pure scheduling pass over a snapshot, for callers without state.

It builds a `Scheduler` for the call and throws it away, so it never mutates its inputs and
the same inputs give the same result. Services that run passes back to back should keep a
`Scheduler` and feed it deltas instead; the decisions are the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpucenter.core.fairshare import FairShare
from gpucenter.core.model import ClusterSnapshot, PassResult, PendingJob
from gpucenter.core.passes import paused_gc
from gpucenter.core.policy import DEFAULT_POLICIES, Policies
from gpucenter.core.reservations import AdvanceReservation
from gpucenter.core.scheduler import Scheduler
from gpucenter.domain.clock import Instant


def build_scheduler(
    snapshot: ClusterSnapshot,
    queue: Sequence[PendingJob],
    *,
    policy: Policies = DEFAULT_POLICIES,
    fair_share: FairShare | None = None,
    reservations: Sequence[AdvanceReservation] = (),
) -> Scheduler:
    """A scheduler loaded with the snapshot's running jobs and the queue."""
    sched = Scheduler(
        snapshot.nodes,
        policy=policy,
        fair_share=fair_share,
        reservations=reservations,
        running=snapshot.running,
    )
    sched.submit_all(queue)
    return sched


def schedule_pass(
    snapshot: ClusterSnapshot,
    queue: Sequence[PendingJob],
    now: Instant,
    *,
    policy: Policies | None = None,
    fair_share: FairShare | None = None,
    reservations: Sequence[AdvanceReservation] = (),
    backfill: bool = True,
) -> PassResult:
    """Decide which pending jobs start now, which running jobs to preempt, and why the rest
    wait. Pure: same inputs, same result; `snapshot` and `queue` are not mutated. With
    `backfill` false, a quick pass (see `Scheduler.run_pass` and `cadence.PassCadence`)."""
    with paused_gc():
        sched = build_scheduler(
            snapshot,
            queue,
            policy=policy if policy is not None else DEFAULT_POLICIES,
            fair_share=fair_share,
            reservations=reservations,
        )
        sched.throwaway = True
        result = sched.run_pass(now, backfill=backfill)
        # Freed here, by reference counting, rather than left for the collector to trace
        # once it is re-enabled: the result does not refer to the scheduler.
        del sched
    return result
