"""Inputs and outputs of a scheduling pass. All frozen: a pass never mutates what it is given.

Fields added after v0 all carry defaults, so that callers written against the first version
(`ClusterSnapshot(nodes, running)`, `PendingJob(...)`, `PassResult.starts/.waits`) keep working.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gpucenter.domain.clock import Instant
from gpucenter.domain.ids import JobId, ProjectId, UserId
from gpucenter.domain.jobs import GpuRequest, WaitReason
from gpucenter.domain.messages import Message

#: The QoS that runs on idle GPUs beyond allocations and is preempted when entitled work
#: needs them.
OPPORTUNISTIC = "opportunistic"
NORMAL = "normal"


@dataclass(frozen=True, slots=True)
class NodeGpus:
    """Which GPUs (by index on the node) of which node a job holds."""

    node: str
    gpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """One node. `block` is its leaf switch; `nvlink_domain` an optional NVLink rack (NVL72)."""

    name: str
    gpu_type: str
    gpu_count: int
    block: str = "default"
    site: str = "default"
    nvlink_domain: str | None = None


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job holding GPUs.

    `borrowed` marks a job started on capacity another programme owns (or on a lease's idle
    GPUs); together with the opportunistic QoS it makes the job a preemption candidate.
    `requeue_at` is set once a preemption was asked for: the GPUs come back then.
    """

    job_id: JobId
    project_id: ProjectId
    placement: tuple[NodeGpus, ...]
    started_at: Instant
    time_limit_s: int
    qos: str = NORMAL
    borrowed: bool = False
    requeue_at: Instant | None = None

    @property
    def preemptible(self) -> bool:
        return self.qos == OPPORTUNISTIC or self.borrowed

    @property
    def ends_by(self) -> Instant:
        """The latest instant the job can hold its GPUs: time limit or requeue, whichever first."""
        end = self.started_at + self.time_limit_s
        if self.requeue_at is not None and self.requeue_at < end:
            return self.requeue_at
        return end


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """The cluster as the core sees it: nodes, and what the running jobs hold."""

    nodes: tuple[NodeSnapshot, ...]
    running: tuple[RunningJob, ...] = ()


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A job waiting to start.

    `budget_gpu_seconds_left` is what remains of the job's allocation after the usage charged
    and the GPU-seconds still running jobs of that allocation may use; None means unlimited.
    `max_blocks` caps how many leaf-switch blocks a multi-node job may span (None: any).
    """

    job_id: JobId
    project_id: ProjectId
    request: GpuRequest
    time_limit_s: int
    submitted_at: Instant
    budget_gpu_seconds_left: float | None = None
    qos: str = NORMAL
    user_id: UserId | None = None
    max_blocks: int | None = None


@dataclass(frozen=True, slots=True)
class Start:
    """Start `job_id` on `placement`. `preemptible` starts run on borrowed or idle capacity."""

    job_id: JobId
    placement: tuple[NodeGpus, ...]
    qos: str = NORMAL
    borrowed: bool = False

    @property
    def gpu_type_nodes(self) -> tuple[str, ...]:
        return tuple(p.node for p in self.placement)

    @property
    def preemptible(self) -> bool:
        return self.qos == OPPORTUNISTIC or self.borrowed


@dataclass(frozen=True, slots=True)
class Wait:
    """Why a job waits: a reason code for machines, the sentence in English (`detail`), and
    the same sentence as a message code with parameters (`message`) for readers of any
    language and time zone; None only from callers written before messages existed."""

    reason: WaitReason
    detail: str
    message: Message | None = None


@dataclass(frozen=True, slots=True)
class PlannedStart:
    """A backfill reservation: the job is expected to start at `start_at` on `nodes`."""

    job_id: JobId
    start_at: Instant
    nodes: tuple[str, ...]
    gpus_per_node: int


@dataclass(frozen=True, slots=True)
class Preemption:
    """Ask `job_id` to stop (checkpoint) and requeue it at `requeue_at`, to make room."""

    job_id: JobId
    for_job: JobId
    requeue_at: Instant
    reason: str


@dataclass(frozen=True, slots=True)
class PriorityBreakdown:
    """One job's priority as weight x normalised factor, like Slurm's `sprio` row."""

    job_id: JobId
    total: float
    fair_share: float
    age: float
    job_size: float
    qos: float
    weights: tuple[float, float, float, float]

    def as_row(self) -> dict[str, float]:
        """The weighted contributions, for a table a user can read."""
        w_fs, w_age, w_size, w_qos = self.weights
        return {
            "priority": self.total,
            "fairshare": w_fs * self.fair_share,
            "age": w_age * self.age,
            "jobsize": w_size * self.job_size,
            "qos": w_qos * self.qos,
        }


@dataclass(frozen=True, slots=True)
class Fragmentation:
    """Free GPUs the highest-priority waiting job cannot use (0 when nothing waits)."""

    free_gpus: int
    unusable_gpus: int

    @property
    def ratio(self) -> float:
        return self.unusable_gpus / self.free_gpus if self.free_gpus else 0.0


_EMPTY: Mapping[JobId, PriorityBreakdown] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PassResult:
    """What one pass decided.

    `starts` and `waits` are the v0 contract. `preemptions` lists running jobs to requeue;
    `opportunistic` the started jobs that run preemptible; `planned` the backfill reservations
    of the top blocked jobs; `priorities` every pending job's breakdown.
    """

    starts: tuple[Start, ...]
    waits: Mapping[JobId, Wait]
    priorities: Mapping[JobId, PriorityBreakdown] = field(default_factory=lambda: _EMPTY)
    planned: tuple[PlannedStart, ...] = ()
    preemptions: tuple[Preemption, ...] = ()
    opportunistic: frozenset[JobId] = frozenset()
    fragmentation: Fragmentation = field(default_factory=lambda: Fragmentation(0, 0))
