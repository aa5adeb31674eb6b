"""Jobs: what a user asks for, the states a job moves through, and why a job waits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from gpucenter.domain.errors import InvalidTransition, ValidationError
from gpucenter.domain.messages import msg

MAX_TIME_LIMIT_S = 30 * 24 * 3600
MAX_COMMAND_CHARS = 64 * 1024


class JobState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT}
)

# RUNNING -> PENDING is a requeue (preemption, or a node lost under the job).
_ALLOWED: Mapping[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.TIMEOUT,
            JobState.PENDING,
        }
    ),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.TIMEOUT: frozenset(),
}


def check_transition(current: JobState, new: JobState) -> JobState:
    """Return `new` if a job may move there from `current`; raise otherwise."""
    if new not in _ALLOWED[current]:
        raise InvalidTransition(f"a job cannot move from {current} to {new}")
    return new


class WaitReason(StrEnum):
    """Why a pending job is not running, in the spirit of Slurm's reason codes."""

    PRIORITY = "Priority"
    RESOURCES = "Resources"
    RESERVATION = "Reservation"
    ALLOCATION_EXHAUSTED = "AllocationExhausted"
    QUOTA_LIMIT = "QuotaLimit"
    TOPOLOGY = "Topology"
    DEPENDENCY = "Dependency"
    SITE_UNAVAILABLE = "SiteUnavailable"
    SITE_NOT_READY = "SiteNotReady"
    """The site cannot run the job yet (its account or owner is not provisioned there)."""
    NEW = "New"
    # The project is on hold: its programme holds new jobs while a report is overdue.
    HELD = "Held"


@dataclass(frozen=True, slots=True)
class GpuRequest:
    """GPUs a job needs: `nodes` nodes with `gpus_per_node` GPUs each, all of one type.

    `alternatives` lists further GPU types the job accepts; the job still runs on one type.
    """

    gpu_type: str
    gpus_per_node: int
    nodes: int = 1
    alternatives: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.gpu_type:
            raise ValidationError.about("gpu_type", msg("error.gpu_type_missing"))
        if self.gpus_per_node < 1:
            raise ValidationError.about("gpus_per_node", msg("error.at_least_one"))
        if self.nodes < 1:
            raise ValidationError.about("nodes", msg("error.at_least_one"))

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def acceptable_types(self) -> tuple[str, ...]:
        return (self.gpu_type, *(t for t in self.alternatives if t != self.gpu_type))


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything a user says about a job, validated for shape (not against a site)."""

    name: str
    command: str
    gpu: GpuRequest
    time_limit_s: int
    workdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.command.strip():
            raise ValidationError.about("command", msg("error.command_empty"))
        if len(self.command) > MAX_COMMAND_CHARS:
            raise ValidationError.about(
                "command", msg("error.at_most_chars", most=MAX_COMMAND_CHARS)
            )
        if self.time_limit_s < 1:
            raise ValidationError.about("time_limit", msg("error.time_limit_short"))
        if self.time_limit_s > MAX_TIME_LIMIT_S:
            raise ValidationError.about("time_limit", msg("error.time_limit_long"))
        if len(self.name) > 200:
            raise ValidationError.about("name", msg("error.at_most_chars", most=200))
        for key in self.env:
            if not key or "=" in key or "\0" in key:
                raise ValidationError.about("env", msg("error.env_name", name=repr(key)))
