"""The scheduling core: pure, deterministic functions of a snapshot, a queue and a time.

It imports only `gpucenter.domain`; a test enforces that boundary.
"""

from gpucenter.core.model import (
    ClusterSnapshot,
    NodeGpus,
    NodeSnapshot,
    PassResult,
    PendingJob,
    RunningJob,
    Start,
    Wait,
)
from gpucenter.core.schedule import schedule_pass

__all__ = [
    "ClusterSnapshot",
    "NodeGpus",
    "NodeSnapshot",
    "PassResult",
    "PendingJob",
    "RunningJob",
    "Start",
    "Wait",
    "schedule_pass",
]
