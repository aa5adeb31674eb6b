"""The scheduling core: pure, deterministic functions of a snapshot, a queue and a time.

It imports only `gpucenter.domain`; a test enforces that boundary. `schedule_pass` is the
one-call entry point; `Scheduler` keeps indices between passes for the server loop and the
simulator. Modules: priority, fairshare, placement/pools, timeline (backfill), preemption,
reservations, policy; scheduler.py runs a pass over them.
"""

from gpucenter.core.cadence import PassCadence
from gpucenter.core.fairshare import FairShare, ShareAccount, compute_factors, decay, decay_all
from gpucenter.core.model import (
    NORMAL,
    OPPORTUNISTIC,
    ClusterSnapshot,
    Fragmentation,
    NodeGpus,
    NodeSnapshot,
    PassResult,
    PendingJob,
    PlannedStart,
    Preemption,
    PriorityBreakdown,
    RunningJob,
    Start,
    Wait,
)
from gpucenter.core.policy import DEFAULT_POLICIES, Policies, PriorityWeights
from gpucenter.core.reservations import AdvanceReservation, choose_nodes
from gpucenter.core.schedule import build_scheduler, schedule_pass
from gpucenter.core.scheduler import Scheduler

__all__ = [
    "DEFAULT_POLICIES",
    "NORMAL",
    "OPPORTUNISTIC",
    "AdvanceReservation",
    "ClusterSnapshot",
    "FairShare",
    "Fragmentation",
    "NodeGpus",
    "NodeSnapshot",
    "PassCadence",
    "PassResult",
    "PendingJob",
    "PlannedStart",
    "Policies",
    "Preemption",
    "PriorityBreakdown",
    "PriorityWeights",
    "RunningJob",
    "Scheduler",
    "ShareAccount",
    "Start",
    "Wait",
    "build_scheduler",
    "choose_nodes",
    "compute_factors",
    "decay",
    "decay_all",
    "schedule_pass",
]
