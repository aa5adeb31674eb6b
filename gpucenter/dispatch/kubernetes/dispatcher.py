"""The Kubernetes dispatcher: each gpucenter job becomes a batch/v1 Job in its project's namespace.

Same `Dispatcher` contract as the local and Slurm kinds; everything a Job needs comes in the
`LaunchRequest` (see `manifests` for the Job itself: names, labels, gangs, placement, owner).

What is particular to Kubernetes, and how it is handled:

- **Submitted is not started.** `submit` returns once the API server stored the Job. Kueue
  admits it (the whole gang or nothing), the scheduler binds its pods, the nodes run them;
  `poll` tells the `KubernetesObserver` when every pod of the gang runs (the job's start, the
  earliest pod start: what the ledger charges from) and, meanwhile, why it waits (Kueue's or
  the scheduler's message).
- **Never a Job twice.** A run's Job has a fixed name; a create the API server answers with
  409 is a Job an earlier attempt made (its answer was lost, or the server died before
  recording it): that Job is adopted. After a restart `adopt` finds Jobs by their recorded
  ``namespace/name``.
- **The API server may be down.** Every request that cannot be served raises
  `KubernetesUnavailable` (a `SiteUnavailable`): `submit` leaves the job queued (the control
  plane backs off and retries: the fixed name makes the retry safe); `poll` keeps every job
  as it is, says why in `unavailable` and on each job's row, and reads them again next time.
  Cancels that could not be delivered are retried on each poll.
- **Cancel** deletes the Job with ``Foreground`` propagation: the Job stays (being deleted)
  until its pods are gone, and the cancel is reported only then, so the GPUs are really free
  when gpucenter gives them to the next job.
- **Logs.** When a run ends its pods' logs (stdout and stderr are one stream in Kubernetes)
  are copied into the job's stdout file, which is where gpucenter serves logs from. Where the
  cluster cannot give them (KWOK's fake nodes run no containers and have no logs), the
  stderr file says so, with the cluster's answer: no log is ever made up.
- `shutdown` and `detach` leave the Jobs running: they are adopted on the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gpucenter.dispatch.base import (
    DispatchError,
    Launched,
    LaunchRequest,
    SiteCapabilities,
    SiteKind,
    StateChange,
)
from gpucenter.dispatch.kubernetes.api import (
    JOBS,
    LOCAL_QUEUES,
    NAMESPACES,
    NODES,
    PODS,
    WORKLOADS,
    Conflict,
    KubeApi,
    KubernetesError,
    KubernetesUnavailable,
    NotFound,
)
from gpucenter.dispatch.kubernetes.manifests import (
    CONTAINER,
    JOB_NAME_LABEL,
    LABEL_INSTANCE,
    LABEL_JOB,
    JobShape,
    external_id,
    job_manifest,
    namespace_for,
    parse_external_id,
)
from gpucenter.dispatch.kubernetes.states import Phase, observe, span
from gpucenter.domain.clock import Clock, Instant, SystemClock
from gpucenter.domain.cluster import Node
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState

__all__ = ["KubernetesDispatcher", "KubernetesObserver", "Provisioner", "read_nodes"]

_log = logging.getLogger(__name__)
Json = dict[str, Any]
WAITING_DETAIL_EVERY_S = 10.0  # Kueue's word on suspended Jobs: read at most this often

_CAPABILITIES = SiteCapabilities(
    SiteKind.KUBERNETES,
    containers=True,  # the job's image is the container's
    adopts_after_restart=True,  # Jobs outlive gpucenter; found again by namespace/name
    reports_utilisation=False,  # no GPU metrics are read from the cluster (yet)
    enforces_time_limit=True,  # activeDeadlineSeconds
)


class KubernetesObserver(Protocol):
    """Told what `poll` learns about Jobs that have not ended (see services)."""

    def started(self, job_id: JobId, at: Instant) -> None: ...

    def waiting(self, job_id: JobId, reason: str, detail: str) -> None: ...


Provisioner = Callable[[str], None]
"""Makes a project's namespace (quota, queue, roles) when a job of it finds none: the
namespace sync for that project alone, which reads gpucenter's database (services)."""


@dataclass(slots=True)
class _Tracked:
    job_id: JobId
    namespace: str
    name: str
    started: bool = False
    note: tuple[str, str] | None = None  # last (reason, detail) told to the observer
    missing: int = 0  # polls in a row that did not list the Job
    cancel_pending: bool = False  # asked, not yet delivered (the API server was down)
    deleted: bool = False  # its deletion was asked (by us) or seen (by someone else)


class KubernetesDispatcher:
    """Hands jobs to one Kubernetes cluster as Jobs; implements the `Dispatcher` protocol."""

    def __init__(
        self,
        api: KubeApi,
        log_dir: Path,
        *,
        shape: JobShape | None = None,
        namespace_prefix: str = "gpc-",
        clock: Clock | None = None,
        observer: KubernetesObserver | None = None,
        provision: Provisioner | None = None,
        fetch_logs: bool = True,
        missing_polls_before_lost: int = 5,
    ) -> None:
        self._api = api
        self._log_dir = Path(log_dir)
        self._shape = shape or JobShape()
        self._prefix = namespace_prefix
        self._clock: Clock = clock or SystemClock()
        self._observer = observer
        self._provision = provision
        self._fetch_logs = fetch_logs
        self._lost_after = missing_polls_before_lost
        self._selector = f"{LABEL_INSTANCE}={self._shape.instance}"
        self._jobs: dict[JobId, _Tracked] = {}
        self._ready: set[str] = set()  # namespaces known to have what a Job needs
        self._waiting_read = 0.0
        self._waiting: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._unavailable = ""

    @property
    def capabilities(self) -> SiteCapabilities:
        return _CAPABILITIES

    @property
    def unavailable(self) -> str:
        """Why the last poll could not reach the API server; empty when it could."""
        return self._unavailable

    def namespace_of(self, project: str) -> str:
        return namespace_for(project, self._prefix)

    # ----------------------------------------------------------------- submit
    def submit(self, request: LaunchRequest) -> Launched:
        """Create the run's Job (or find the one an earlier attempt created)."""
        with self._lock:
            if request.job_id in self._jobs:
                raise DispatchError(f"job {request.job_id} is already submitted to Kubernetes")
            namespace = self.namespace_of(request.project)
            self._ensure_namespace(namespace, request.project)
            manifest = job_manifest(request, namespace, self._shape)
            name = manifest["metadata"]["name"]
            try:
                self._create(namespace, manifest)
            except NotFound:  # the namespace went away since it was checked: once more
                self._ready.discard(namespace)
                self._ensure_namespace(namespace, request.project)
                self._create(namespace, manifest)
            self._jobs[request.job_id] = _Tracked(request.job_id, namespace, name)
        _log.info("job %s submitted to Kubernetes as %s/%s", request.job_id, namespace, name)
        return Launched(
            job_id=request.job_id,
            external_id=external_id(namespace, name),
            stdout_path=str(self._log_dir / f"job-{request.job_id}.out"),
            stderr_path=str(self._log_dir / f"job-{request.job_id}.err"),
            started_at=self._clock.now(),
        )

    def _create(self, namespace: str, manifest: Json) -> None:
        name = manifest["metadata"]["name"]
        try:
            self._api.create(JOBS.path(namespace), manifest)
        except Conflict:
            existing = self._api.get(JOBS.path(namespace, name))
            labels = existing.get("metadata", {}).get("labels") or {}
            if labels.get(LABEL_INSTANCE) != self._shape.instance or labels.get(
                LABEL_JOB
            ) != manifest["metadata"]["labels"].get(LABEL_JOB):
                raise DispatchError(
                    f"a Job {namespace}/{name} that is not this gpucenter's exists already"
                ) from None
            _log.warning("Job %s/%s exists already (an earlier attempt): adopted", namespace, name)
        except (KubernetesUnavailable, NotFound):
            raise
        except KubernetesError as exc:
            raise DispatchError(f"the cluster refused the job's Job: {exc.message}") from exc

    def _ensure_namespace(self, namespace: str, project: str) -> None:
        """The project's namespace (and its LocalQueue, with Kueue) must exist before its
        first Job: checked once per namespace, provisioned by the sync when missing."""
        if namespace in self._ready:
            return
        queue = self._shape.queue
        probe = (
            LOCAL_QUEUES.path(namespace, queue)
            if queue is not None
            else NAMESPACES.path(None, namespace)
        )
        try:
            self._api.get(probe)
        except NotFound:
            if self._provision is None:
                raise DispatchError(
                    f"project {project!r} has no namespace {namespace} (with its queue) at this "
                    "site yet; the site's namespace sync creates it"
                ) from None
            _log.info("namespace %s missing: provisioning it for project %s", namespace, project)
            self._provision(project)
            try:
                self._api.get(probe)
            except NotFound:
                raise DispatchError(
                    f"the namespace sync made no namespace {namespace} (with its queue) for "
                    f"project {project!r}: has it a current allocation for this site?"
                ) from None
        self._ready.add(namespace)

    # ----------------------------------------------------------------- cancel
    def cancel(self, job_id: JobId) -> None:
        """Delete the Job and its pods; if the API server is down, poll() retries."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.deleted:
                return
            job.cancel_pending = True
            self._try_cancel(job)

    def _try_cancel(self, job: _Tracked) -> None:
        try:
            if not job.started:  # its run is charged from its pods' start: read it first
                pods = self._api.list(PODS.path(job.namespace), f"{JOB_NAME_LABEL}={job.name}")
                self._started_from(job, pods)
            self._api.delete(JOBS.path(job.namespace, job.name), propagation="Foreground")
        except KubernetesUnavailable as exc:
            _log.warning("cannot cancel job %s yet: %s", job.job_id, exc)
            return
        except KubernetesError as exc:  # poll() reports how it ended
            _log.info("deleting the Job of job %s: %s", job.job_id, exc)
        job.cancel_pending = False
        job.deleted = True

    # ------------------------------------------------------------------- poll
    def poll(self) -> Sequence[StateChange]:
        """Read this instance's Jobs (and, when needed, pods); return the runs that ended."""
        with self._lock:
            if not self._jobs and not self._unavailable:
                return []  # nothing to read (while down, the list below says when it is back)
            try:
                listed = {
                    (j["metadata"]["namespace"], j["metadata"]["name"]): j
                    for j in self._api.list(JOBS.path(), self._selector)
                }
                pods = self._pods(listed)
                self._read_waiting(listed)
            except KubernetesUnavailable as exc:
                self._site_down(str(exc))
                return []
            if self._unavailable:
                _log.info("the Kubernetes API server answers again")
            self._unavailable = ""
            for job in self._jobs.values():
                if job.cancel_pending:
                    self._try_cancel(job)
            changes: list[StateChange] = []
            for job in list(self._jobs.values()):
                key = (job.namespace, job.name)
                change = self._step(job, listed.get(key), pods.get(key, []))
                if change is not None:
                    changes.append(change)
                    del self._jobs[job.job_id]
            return changes

    def _pods(self, listed: dict[tuple[str, str], Json]) -> dict[tuple[str, str], list[Json]]:
        """The pods of our Jobs, grouped by Job; read only when a job needs them (to see it
        start, or to see how it ended): a thousand running jobs cost one list of Jobs."""
        needed = False
        for job in self._jobs.values():
            found = listed.get((job.namespace, job.name))
            if found is None:
                continue
            conditions = (found.get("status") or {}).get("conditions") or ()
            ended = any(c.get("type") in ("Complete", "Failed") for c in conditions)
            going = bool(found["metadata"].get("deletionTimestamp"))
            waiting = not job.started and not (found.get("spec") or {}).get("suspend")
            if ended or waiting or (going and not job.started):
                needed = True
                break
        grouped: dict[tuple[str, str], list[Json]] = defaultdict(list)
        if not needed:
            return grouped
        for pod in self._api.list(PODS.path(), self._selector):
            meta = pod["metadata"]
            owner = (meta.get("labels") or {}).get(JOB_NAME_LABEL)
            if owner:
                grouped[(meta["namespace"], owner)].append(pod)
        return grouped

    def _read_waiting(self, listed: dict[tuple[str, str], Json]) -> None:
        """Kueue's message for each suspended Job (why it is not admitted), now and then."""
        if self._shape.queue is None:
            return
        suspended = {key for key, j in listed.items() if (j.get("spec") or {}).get("suspend")} & {
            (t.namespace, t.name) for t in self._jobs.values()
        }
        now = time.monotonic()
        if not suspended or now - self._waiting_read < WAITING_DETAIL_EVERY_S:
            return
        self._waiting_read = now
        found: dict[tuple[str, str], str] = {}
        for namespace in sorted({ns for ns, _ in suspended}):
            for wl in self._api.list(WORKLOADS.path(namespace)):
                for ref in wl["metadata"].get("ownerReferences") or ():
                    if ref.get("kind") == "Job" and (namespace, ref.get("name")) in suspended:
                        found[(namespace, ref["name"])] = _workload_message(wl)
        self._waiting = found

    def _step(self, job: _Tracked, found: Json | None, pods: list[Json]) -> StateChange | None:
        now = self._clock.now()
        if found is None:
            if job.deleted:
                return self._end(job, JobState.CANCELLED, now, None, "its Job was deleted")
            job.missing += 1
            if job.missing < self._lost_after:
                return None
            detail = f"the Job {job.namespace}/{job.name} is gone from the cluster"
            return self._end(job, JobState.FAILED, now, None, detail)
        job.missing = 0
        if found["metadata"].get("deletionTimestamp"):
            job.deleted = True  # by us or by someone at the cluster: reported once gone
            self._started_from(job, pods)
            return None
        seen = observe(found, pods, self._waiting.get((job.namespace, job.name), ""))
        if job.started and seen.phase is not Phase.ENDED:
            return None  # running (its pods are read again only to see how it ended)
        if seen.phase is Phase.WAITING:
            self._note(job, seen.reason, seen.detail)
            return None
        if seen.started_at is not None and not job.started:
            self._tell_started(job, seen.started_at)
        if seen.phase is Phase.RUNNING:
            self._note(job, "", "")
            return None
        assert seen.state is not None
        detail = seen.detail
        if self._fetch_logs:
            detail += self._collect_logs(job, pods)
        return self._end(job, seen.state, seen.ended_at or now, seen.exit_code, detail)

    def _end(
        self, job: _Tracked, state: JobState, at: Instant, code: int | None, detail: str
    ) -> StateChange:
        if not job.started:  # never ran (cancelled while queued): nothing to charge
            self._tell_started(job, at)
        where = f"Kubernetes Job {job.namespace}/{job.name}"
        return StateChange(job.job_id, state, at, code, f"{where}: {detail}")

    def _started_from(self, job: _Tracked, pods: list[Json]) -> None:
        """Tell the start of a run being stopped, if its pods ran and it was not told yet."""
        if job.started:
            return
        started, _ = span(pods)
        if started is not None:
            self._tell_started(job, started)

    def _tell_started(self, job: _Tracked, at: Instant) -> None:
        job.started = True
        if self._observer is not None:
            self._observer.started(job.job_id, at)

    def _note(self, job: _Tracked, reason: str, detail: str) -> None:
        if job.note == (reason, detail):
            return
        job.note = (reason, detail)
        if self._observer is not None:
            self._observer.waiting(job.job_id, reason, detail)

    def _site_down(self, message: str) -> None:
        if not self._unavailable:
            _log.warning("Kubernetes API server unreachable: %s", message)
        self._unavailable = message
        for job in self._jobs.values():
            self._note(
                job,
                "SiteUnavailable",
                f"the Kubernetes site does not answer ({message}); the job is kept and its "
                "state read again when the site is back",
            )

    # ------------------------------------------------------------------- logs
    def _collect_logs(self, job: _Tracked, pods: list[Json]) -> str:
        """Copy the run's pod logs into its stdout file; say in its stderr file (and in the
        returned detail) where the cluster could not give them. Never invents a line."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        out = self._log_dir / f"job-{job.job_id}.out"
        err = self._log_dir / f"job-{job.job_id}.err"
        texts: list[str] = []
        missing: list[str] = []
        ordered = sorted(pods, key=lambda p: _index(p))
        for pod in ordered:
            name = pod["metadata"]["name"]
            path = PODS.path(job.namespace, name) + "/log"
            try:
                text = self._api.text(path, [("container", CONTAINER)])
            except KubernetesError as exc:
                missing.append(f"pod {name}: {exc.message}")
                continue
            header = f"==> pod {name} (index {_index(pod)}) <==\n" if len(ordered) > 1 else ""
            texts.append(header + text)
        if not ordered:
            missing.append("no pod of the run is left to read logs from")
        out.write_text("".join(texts))
        if not missing:
            err.write_text("")
            return ""
        note = "; ".join(missing)
        err.write_text(f"gpucenter: the cluster gave no logs for this run: {note}\n")
        return "; no pod logs (the cluster gave none, see the job's stderr)"

    # ------------------------------------------------------ restart and stop
    def adopt(
        self,
        job_id: JobId,
        external_id: str,
        started_at: Instant,
        time_limit_s: int,
        stderr_path: str | None,
    ) -> bool:
        """Watch a Job an earlier server created; the next poll reports where it is."""
        del started_at, time_limit_s, stderr_path  # the cluster keeps these itself
        parsed = parse_external_id(external_id)
        if parsed is None:
            return False
        with self._lock:
            self._jobs.setdefault(job_id, _Tracked(job_id, *parsed))
        return True

    def detach(self) -> None:
        """Forget every job without touching it in the cluster: a later server adopts them."""
        with self._lock:
            self._jobs.clear()

    def running_job_ids(self) -> frozenset[JobId]:
        with self._lock:
            return frozenset(self._jobs)

    def shutdown(self) -> None:
        """Stop watching. Jobs keep running (they are adopted on the next start)."""
        self.detach()


def _index(pod: Json) -> int:
    value = (pod["metadata"].get("annotations") or {}).get(
        "batch.kubernetes.io/job-completion-index", "0"
    )
    return int(value) if str(value).isdigit() else 0


def _workload_message(workload: Json) -> str:
    """Kueue's reason a Workload is not admitted, in its words."""
    conditions = (workload.get("status") or {}).get("conditions") or ()
    for kind in ("QuotaReserved", "Admitted", "Evicted"):
        for cond in conditions:
            if cond.get("type") == kind and cond.get("message"):
                return f"queued at Kueue: {cond['message']}"
    return "queued at Kueue: not evaluated yet"


def read_nodes(
    api: KubeApi,
    gpu_resource: str = "nvidia.com/gpu",
    gpu_type_label: str = "gpucenter.io/gpu-type",
    block_label: str = "gpucenter.io/block",
    selector: str | None = None,
) -> tuple[Node, ...]:
    """The cluster's GPU nodes: name, GPU type (its label) and allocatable GPUs, block (its
    label, else none). Nodes without the type label or GPUs are not gpucenter's to place."""
    nodes = []
    for item in api.list(NODES.path(), selector):
        meta, status = item["metadata"], item.get("status") or {}
        labels = meta.get("labels") or {}
        gpu_type = labels.get(gpu_type_label)
        count = str((status.get("allocatable") or {}).get(gpu_resource, "0"))
        if not gpu_type or not count.isdigit() or int(count) <= 0:
            continue
        if (item.get("spec") or {}).get("unschedulable"):
            continue
        nodes.append(Node(meta["name"], gpu_type.lower(), int(count), labels.get(block_label, "")))
    return tuple(sorted(nodes, key=lambda n: n.name))
