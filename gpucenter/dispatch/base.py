"""The site contract: the one boundary between the control plane and a cluster.

Every site kind (local processes, Slurm, Kubernetes, the simulator) implements
`Dispatcher`, and the rest of gpucenter uses nothing else of it. What differs between kinds
is *declared* in `SiteCapabilities`, which callers read; they never probe a dispatcher for
members (``getattr``/``hasattr``). An operation a kind cannot perform still exists with a
defined answer (a kind that cannot adopt returns False from `adopt`), so a new kind is one
package implementing this protocol plus its settings, registered with the wiring by kind.

`LaunchRequest` carries the whole job: its GPU shape, the owner it runs as, its project and
the account it is charged to at the site. A dispatcher needs nothing else, and in particular
never reads gpucenter's database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol, runtime_checkable

from gpucenter.core.model import NORMAL, NodeGpus
from gpucenter.domain.clock import Instant
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import GpuRequest, JobState

__all__ = [
    "DispatchError",
    "Dispatcher",
    "JobOwner",
    "LaunchRequest",
    "Launched",
    "SiteCapabilities",
    "SiteKind",
    "SiteNotReady",
    "SiteUnavailable",
    "StateChange",
    "project_account",
]


class SiteKind(StrEnum):
    """What kind of cluster a dispatcher drives (stored as a site's kind in the database)."""

    LOCAL = "local"
    SLURM = "slurm"
    KUBERNETES = "kubernetes"
    SIMULATED = "simulated"
    BROKER = "broker"
    """Several sites behind one dispatcher (`SiteBroker`); never a site of its own."""


@dataclass(frozen=True, slots=True)
class SiteCapabilities:
    """What a kind of site can do beyond the operations every dispatcher has.

    Read by the control plane to decide, never found out by trying: the submission refuses a
    container image where `containers` is False, and recovery after a restart fails (and
    charges) running jobs of a site that cannot adopt them instead of waiting for them.
    """

    kind: SiteKind
    containers: bool = False
    """`LaunchRequest.image` is run; without it a request with an image is refused."""
    adopts_after_restart: bool = False
    """`adopt` re-attaches a job a previous server started, which keeps running meanwhile."""
    reports_utilisation: bool = False
    """The final `StateChange` of a measured run carries its mean GPU utilisation."""
    enforces_time_limit: bool = True
    """The site ends a job at its time limit and reports it TIMEOUT."""
    time_limit_step_s: int = 1
    """The site counts time limits in steps of this many seconds and rounds a request up
    (Slurm: 60, whole minutes)."""
    time_limit_grace_s: int = 0
    """How long past its (rounded) limit a job may still hold its GPUs before the site has
    stopped it (Slurm: OverTimeLimit, its once-every-30-s limit check, and KillWait)."""
    sessions_over_tcp: bool = False
    """Interactive sessions listen on TCP (TLS) on their node, not on a Unix socket: the
    site's nodes are other machines than the server's (`domain.sessions`)."""

    def enforced_time_limit(self, requested_s: int) -> int:
        """The longest a job asking for `requested_s` may hold its GPUs at this site: what a
        start reserves against the allocation, and the most a run is charged."""
        step = max(1, self.time_limit_step_s)
        return -(-requested_s // step) * step + max(0, self.time_limit_grace_s)


def project_account(project: str) -> str:
    """The account a project's jobs are charged to at a site: named after the project.

    The one meaning of "account" in a `LaunchRequest`. A Slurm site's accounts sync creates
    exactly this account for each project (under its organisation and programme), and
    ``sbatch --account`` names it; a kind without accounts ignores it.
    """
    return project


@dataclass(frozen=True, slots=True)
class JobOwner:
    """Who a job runs as: its owner's gpucenter user name and, where known, Unix ids.

    Dispatchers that run jobs as their owner use the ids when given and the name otherwise
    (a directory service resolves it at the site). A job never runs as the server.
    """

    username: str
    uid: int | None = None
    gid: int | None = None


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """Everything a dispatcher needs to start one job on the GPUs the core chose.

    `gpu` is the job's shape as submitted (type, GPUs per node, nodes); `placement` is where
    the core put it (a local site runs it exactly there; Slurm treats it as advice and asks
    for the shape). Built in one place (`services.scheduling.launch`) from the job's row.
    """

    job_id: JobId
    command: str
    gpu: GpuRequest
    placement: tuple[NodeGpus, ...]
    time_limit_s: int
    owner: JobOwner
    project_id: ProjectId
    project: str
    """The project's name: the account is derived from it (`account`; a kind may put it in
    a namespace of its own, as Slurm does under its top account)."""
    name: str = ""
    qos: str = NORMAL
    workdir: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    image: str | None = None
    """Container image, for kinds whose capabilities say `containers`."""
    array_index: int | None = None
    """The job's index within its array, for jobs submitted as one."""
    run: int = 1
    """Which start of the job this is (1, then +1 after each requeue). A dispatcher uses it to
    recognise a start it already made for a server that died before recording it."""
    share_outputs: bool = False
    """The project shares its jobs' outputs with its group: the run's directory and files are
    group-readable by the project's group (2750/0640, umask 027); otherwise the owner's
    alone (0700/0600, umask 077). Never world-readable either way."""

    @property
    def account(self) -> str:
        """The site-side account the job is charged to (see `project_account`)."""
        return project_account(self.project)

    def for_site(self, kind: SiteKind) -> LaunchRequest:
        """This request as a site of `kind` should see it. The owner's Unix ids are those
        gpucenter provisioned on its local site (`services/identity/provisioning`). A Slurm
        site has its own users (its directory names the user like gpucenter does, and its
        associations are by name), so it gets the name only: handed the local uid,
        ``sbatch --uid`` named an account with no association at the cluster ("Invalid
        account") in a centre with both kinds of site. A Kubernetes pod keeps them: a
        distinct non-root uid per person (``runAsUser``), whatever the image says."""
        if kind is not SiteKind.SLURM or (self.owner.uid is None and self.owner.gid is None):
            return self
        return replace(self, owner=JobOwner(self.owner.username))


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


class SiteNotReady(DispatchError):
    """The site cannot run this job *yet* for a reason the control plane can put right: the
    project's account is not synced there, the owner has no account (or no same-named
    group) at the site, the job's log directory cannot be written. The job stays queued,
    says why, and the site's sync is asked to run; it never fails the job."""


class SiteUnavailable(DispatchError):
    """The cluster cannot be reached or is not working: jobs stay queued and are retried.

    Raised by submit() and poll() alike; the control plane backs off and tries again, and
    the waiting jobs show the reason.
    """


@runtime_checkable
class Dispatcher(Protocol):
    """The only way the control plane touches a cluster: every operation it uses."""

    @property
    def capabilities(self) -> SiteCapabilities:
        """What this site can do beyond the operations below (constant for its lifetime)."""
        ...

    def submit(self, request: LaunchRequest) -> Launched:
        """Start (or hand over) the job; DispatchError if it cannot, SiteUnavailable if the
        site does not answer (the job stays queued)."""
        ...

    def cancel(self, job_id: JobId) -> None:
        """Ask the job to end; its end (CANCELLED) comes out of `poll`, which is how the
        server requeues a preempted job. Unknown jobs are ignored. (The simulator's engine
        requeues preempted jobs itself: a simulated job just stops, reported by nobody.)"""
        ...

    def poll(self) -> Sequence[StateChange]:
        """The jobs that ended since the last poll (each reported once)."""
        ...

    def running_job_ids(self) -> frozenset[JobId]:
        """The jobs this dispatcher watches: started or adopted, not yet reported ended."""
        ...

    def adopt(
        self,
        job_id: JobId,
        external_id: str,
        started_at: Instant,
        time_limit_s: int,
        stderr_path: str | None,
    ) -> bool:
        """Watch a job an earlier server started; True if it is now watched. A kind without
        `adopts_after_restart` returns False and watches nothing."""
        ...

    def detach(self) -> None:
        """Forget every job without stopping it (another server takes them over)."""
        ...

    @property
    def unavailable(self) -> str:
        """Why the last poll could not reach the site; empty when it could. A kind whose
        poll raises SiteUnavailable instead always says empty."""
        ...

    def shutdown(self) -> None:
        """Stop this dispatcher (each kind says what becomes of running jobs)."""
        ...
