"""The Dispatcher protocol: the one boundary between the control plane and a cluster."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gpucenter.core.model import NodeGpus
from gpucenter.domain.clock import Instant
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """What a dispatcher needs to start one job on the GPUs the core chose."""

    job_id: JobId
    command: str
    placement: tuple[NodeGpus, ...]
    time_limit_s: int
    workdir: str | None
    env: Mapping[str, str] = field(default_factory=dict)
    account: str = ""
    image: str | None = None
    """Container image, for dispatchers that can start one (submission refuses it elsewhere)."""
    run: int = 1
    """Which start of the job this is (1, then +1 after each requeue). A dispatcher uses it to
    recognise a start it already made for a server that died before recording it."""


@dataclass(frozen=True, slots=True)
class Launched:
    """A job the cluster accepted: its id there and where its output goes."""

    job_id: JobId
    external_id: str
    stdout_path: str
    stderr_path: str
    started_at: Instant


@dataclass(frozen=True, slots=True)
class StateChange:
    """A job reached a new state in the cluster (normally a terminal one)."""

    job_id: JobId
    state: JobState
    at: Instant
    exit_code: int | None = None
    detail: str = ""
    gpu_util: tuple[float, int] | None = None
    """Mean GPU utilisation % over the run and how many samples it rests on, where measured."""
    measured_by: str = ""


class DispatchError(Exception):
    """The cluster refused this job for a reason of the job's own (it fails, saying why)."""


class SiteUnavailable(DispatchError):
    """The cluster cannot be reached or is not working: jobs stay queued and are retried.

    Raised by submit() and poll() alike; the control plane backs off and tries again, and
    the waiting jobs show the reason.
    """


class Dispatcher(Protocol):
    """The only way the control plane touches a cluster."""

    def submit(self, request: LaunchRequest) -> Launched: ...

    def cancel(self, job_id: JobId) -> None: ...

    def poll(self) -> Sequence[StateChange]: ...

    def shutdown(self) -> None: ...
