"""The local dispatcher: each scheduled job runs as a real process on this machine.

How a job is isolated is decided by the wiring and handed over as a `LocalIsolation`
(``isolation.py``; the README's "Security model"): **multi-tenant**, as its owner's Unix
account (`owner_identity`) inside a bubblewrap sandbox (`prepare_sandbox`); **single-user**,
as the server's own user, sandboxed where bubblewrap works, otherwise as a plain process
group; or **refused** (several organisations, no way to switch users): `submit` raises
`SiteUnavailable` with the reason and `unavailable` says it, so jobs wait and show why.

In every mode the job's environment is built from scratch (`job_environment`), each run gets
a fresh directory of its own (`starting.make_output`), and the placement alone chooses the
GPUs: ``CUDA_VISIBLE_DEVICES`` lists physical NVML indices in placement order (duplicates
dropped) with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; ``GPUCENTER_NODES`` names the nodes.

Ending jobs: ``cancel()`` and the time limit send SIGTERM to the job's process group and,
``kill_grace_s`` later, SIGKILL; neither blocks, ``poll()`` escalates. A sandboxed job has
ended when its PID namespace is gone (SIGKILL to the namespace's init also ends what left the
group with ``setsid()``), an unsandboxed one when its process group is gone. Time limits
follow the given `Clock`; the grace period is real time. The dispatcher is a child subreaper
on Linux, so orphans are reaped here. Adoption after a restart: ``adoption.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from gpucenter.dispatch.base import (
    DispatchError,
    Launched,
    LaunchRequest,
    SiteCapabilities,
    SiteKind,
    SiteNotReady,
    SiteUnavailable,
    StateChange,
)
from gpucenter.dispatch.gpuutil import UtilisationSampler
from gpucenter.dispatch.isolation.safe_files import (
    UnsafeFile,
    append_to_owned_file,
)
from gpucenter.dispatch.isolation.sandbox import (
    SandboxError,
    SandboxJob,
    job_environment,
    prepare_sandbox,
    shell_command,
    start_sandboxed,
)
from gpucenter.dispatch.isolation.status import (
    SandboxStatus,
    kill_sandbox,
    read_sandbox_status,
    sandbox_is_ours,
)
from gpucenter.dispatch.local import starting
from gpucenter.dispatch.local.adoption import (
    latest_run_file,
    legacy_status_file,
    mtime_or,
    output_owner,
    settled_status,
    watch_orphan,
    watch_sandbox,
)
from gpucenter.dispatch.local.isolation import LocalIsolation
from gpucenter.dispatch.local.process_groups import (
    become_subreaper,
    group_alive,
    group_gone,
    process_group_of,
    runs_job,
    signal_group,
)
from gpucenter.dispatch.local.running import (
    CLAIMED_ELSEWHERE,
    Running,
    claimed,
    final_state,
    start_wrapped,
)
from gpucenter.domain.clock import Clock, Instant, SystemClock
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState

__all__ = ["CLAIMED_ELSEWHERE", "LocalDispatcher"]

_log = logging.getLogger(__name__)

# The shell that runs job commands (a module constant so tests can make it missing).
SHELL = "/bin/bash"


class LocalDispatcher:
    """Runs jobs as local processes; implements the `Dispatcher` protocol.

    `log_dir` is the dispatcher's own directory: its private spool (status files) and, unless
    `isolation` names another, the root of the per-run job directories. `isolation` says how
    jobs are isolated (see the module text); None: single-user, unsandboxed.

    `gpu_index_map` maps a node name to the physical (NVML) index of each of its GPU slots:
    slot ``i`` of node ``n`` is physical GPU ``gpu_index_map[n][i]``. Nodes not in the map use
    the identity. Build it from `detect_nvidia_gpus()` when the site's slots are a subset or a
    reordering of the machine's GPUs.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        clock: Clock | None = None,
        kill_grace_s: float = 5.0,
        gpu_index_map: Mapping[str, Sequence[int]] | None = None,
        sampler: UtilisationSampler | None = None,
        measured_nodes: frozenset[str] = frozenset(),
        sample_every_s: float = 5.0,
        isolation: LocalIsolation | None = None,
    ) -> None:
        """`sampler` (NVML) measures the GPU utilisation of jobs placed wholly on
        `measured_nodes` (nodes with real GPUs), every `sample_every_s` on poll."""
        if kill_grace_s < 0:
            raise ValueError("kill_grace_s must not be negative")
        self._log_dir = Path(log_dir)
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._isolation = isolation if isolation is not None else LocalIsolation.unsandboxed()
        self._jobs_root = self._isolation.jobs_root or self._log_dir
        self._jobs_root.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._spool = self._log_dir / "spool"
        self._spool.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self._spool, 0o700)  # the status files: the server's alone
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._grace = kill_grace_s
        self._index_map = {node: tuple(ix) for node, ix in (gpu_index_map or {}).items()}
        self._jobs: dict[JobId, Running] = {}
        self._lock = threading.Lock()
        self._sampler = sampler
        self._measured_nodes = measured_nodes
        self._sample_every_s = sample_every_s
        self._last_sample: Instant = float("-inf")
        self._capabilities = SiteCapabilities(
            SiteKind.LOCAL,
            containers=False,
            adopts_after_restart=True,  # sandbox status files (or the wrapper's)
            reports_utilisation=sampler is not None and bool(measured_nodes),
            enforces_time_limit=True,
        )
        become_subreaper()

    @property
    def capabilities(self) -> SiteCapabilities:
        return self._capabilities

    @property
    def jobs_root(self) -> Path:
        """Where the per-run job directories are (the log API reads below it)."""
        return self._jobs_root

    @property
    def unavailable(self) -> str:
        """Why no job may start here now (the isolation mode refuses), or empty."""
        decision = self._isolation.mode()
        return "" if decision.may_run_jobs else decision.message

    # ----------------------------------------------------------------- submit
    def _physical(self, request: LaunchRequest) -> list[tuple[str, int]]:
        return starting.physical_gpus(request, self._index_map)

    def visible_devices(self, request: LaunchRequest) -> str:
        """The CUDA_VISIBLE_DEVICES value for a placement: physical indices, node order."""
        physical = dict.fromkeys(index for _node, index in self._physical(request))
        return ",".join(str(i) for i in physical)

    def submit(self, request: LaunchRequest) -> Launched:
        """Start the job now; DispatchError if it cannot (it fails, saying why),
        SiteUnavailable if no job may start here now (it stays queued)."""
        with self._lock:  # held throughout, so that one job id cannot start twice
            return self._start(request)

    def _start(self, request: LaunchRequest) -> Launched:
        if request.job_id in self._jobs:
            raise DispatchError(f"job {request.job_id} is already running here")
        if request.image is not None:
            raise DispatchError(f"job {request.job_id}: this site runs no container images")
        decision = self._isolation.mode()
        if not decision.may_run_jobs:
            raise SiteUnavailable(decision.message)
        refused = decision.refuses_owner(request.owner.username)
        if refused:
            raise SiteNotReady(refused)  # this job waits; the pass goes on with the others
        starting.check_request_text(request)
        name = starting.job_directory_name(request)
        out_dir = self._jobs_root / name
        claim = self._spool / f"{name}.claim"
        if decision.sandboxed:
            status_path = self._spool / f"{name}.json"
            found = settled_status(status_path, 1.0) if status_path.exists() else None
            if found is not None or claim.exists():
                watched = self._watch_sandbox(
                    request.job_id, status_path, found, request.time_limit_s
                )
                return self._adopted(request, watched, out_dir)
        else:
            status_path = self._spool / f"{name}.status"
            marker = self._spool / f"{name}.pid"
            if marker.exists():
                orphan = watch_orphan(
                    request, marker, out_dir, status_path, self._jobs_root, self._clock
                )
                return self._adopted(request, orphan, out_dir)
        visible = self.visible_devices(request)
        run_as = starting.resolve_identity(request, self._isolation, decision)
        if run_as is not None:
            starting.ensure_home(run_as)
        project_dir = starting.project_space(self._isolation, request, run_as)
        uid = run_as.uid if run_as is not None else os.geteuid()
        gid = run_as.gid if run_as is not None else os.getegid()
        sharing = starting.output_sharing(request, run_as)
        group = sharing.group if sharing.group is not None else gid
        output = starting.make_output(self._jobs_root, name, uid, group, sharing)
        try:
            workdir = starting.working_directory(request, output.path, run_as, project_dir)
            job = SandboxJob(
                job_id=int(request.job_id),
                argv=shell_command(request.command),
                workdir=workdir,
                run_as=run_as,
                project_dir=project_dir,
                gpu_minors=starting.gpu_minors(self._physical(request), self._isolation)
                if decision.sandboxed
                else (),
                env=request.env,
                job_vars=starting.job_vars(request, visible, project_dir),
                trusted_root=Path("/"),
                shared_runs=self._jobs_root if sharing.group is not None else None,
            )
            try:
                if decision.sandboxed:
                    with prepare_sandbox(
                        job, self._isolation.sandbox, status_path=status_path
                    ) as prepared:
                        popen = start_sandboxed(
                            prepared,
                            stdout=output.files["stdout"],
                            stderr=output.files["stderr"],
                            claim=claim,
                            umask=sharing.umask,
                        )
                else:
                    popen = self._start_unsandboxed(
                        request, job, output.files, status_path, sharing.umask
                    )
            except (SandboxError, UnsafeFile, ValueError) as exc:
                raise DispatchError(f"job {request.job_id} cannot start: {exc}") from exc
            except OSError as exc:
                raise SiteUnavailable(f"cannot start job {request.job_id}: {exc}") from exc
        finally:
            output.close()
        if decision.sandboxed and not claimed(popen, claim):
            # Another process holds this run's claim (see start_sandboxed): adopt that run.
            deadline = time.monotonic() + 5.0  # the holder's bwrap writes its status at once
            while not status_path.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            found = settled_status(status_path, 5.0) if status_path.exists() else None
            watched = self._watch_sandbox(request.job_id, status_path, found, request.time_limit_s)
            return self._adopted(request, watched, out_dir)
        if not decision.sandboxed:
            # The wrapper claims the run by writing the marker as its first act (never the
            # server: the claim must be the starting process's own, see running.WRAPPER).
            # Another process may hold it already (a start the database never recorded,
            # made after this server looked for the marker): that run is the one this start
            # stands for, adopted. Waiting for the claim also means that once submit returns,
            # the marker is there for any later start to find.
            marker = self._spool / f"{name}.pid"
            if not claimed(popen, marker):
                orphan = watch_orphan(
                    request, marker, out_dir, status_path, self._jobs_root, self._clock
                )
                return self._adopted(request, orphan, out_dir)
        if self._sampler is not None and all(
            part.node in self._measured_nodes for part in request.placement
        ):
            self._sampler.start(int(request.job_id), [int(i) for i in visible.split(",") if i])
        started_at = self._clock.now()
        self._jobs[request.job_id] = Running(
            job_id=request.job_id,
            popen=popen,
            pgid=popen.pid,  # start_new_session: the leader's pid is the group id
            started_at=started_at,
            time_limit_s=request.time_limit_s,
            stderr_path=out_dir / "stderr",
            status_path=status_path,
            sandboxed=decision.sandboxed,
            owner_uid=uid,
        )
        who = f"as {run_as.name} (uid {run_as.uid})" if run_as else "as the server's user"
        how = "sandboxed" if decision.sandboxed else "unsandboxed"
        _log.info("job %s started %s, %s, pid %d", request.job_id, who, how, popen.pid)
        return Launched(
            job_id=request.job_id,
            external_id=str(popen.pid),
            stdout_path=str(out_dir / "stdout"),
            stderr_path=str(out_dir / "stderr"),
            started_at=started_at,
        )

    def _start_unsandboxed(
        self,
        request: LaunchRequest,
        job: SandboxJob,
        files: Mapping[str, int],
        status: Path,
        umask: int = 0o077,
    ) -> subprocess.Popen[bytes]:
        """Single-user without a sandbox: the server's user, a fresh environment all the same."""
        env = job_environment(job, self._isolation.sandbox)
        marker = self._spool / f"{starting.job_directory_name(request)}.pid"
        status.unlink(missing_ok=True)
        return start_wrapped(
            SHELL, request.command, job.workdir, env, files, status, marker, umask=umask
        )

    def _watch_sandbox(
        self,
        job_id: JobId,
        status_path: Path,
        status: SandboxStatus | None,
        time_limit_s: int,
        started_at: Instant | None = None,
        stderr_path: Path | None = None,
    ) -> Running:
        return watch_sandbox(
            job_id,
            status_path,
            status,
            time_limit_s,
            started_at if started_at is not None else mtime_or(status_path, self._clock.now()),
            stderr_path or self._jobs_root / status_path.name.removesuffix(".json") / "stderr",
            self._jobs_root,
        )

    def _adopted(self, request: LaunchRequest, job: Running, out_dir: Path) -> Launched:
        """A start an earlier server process made and died before the database said so:
        watched (or its exit status reported) instead of started twice."""
        self._jobs[request.job_id] = job
        _log.warning(
            "job %s run %d was started before a restart (group %d, proven ours: %s); adopted",
            *(request.job_id, request.run, job.pgid, job.pgid > 0),
        )
        return Launched(
            job_id=request.job_id,
            external_id=str(job.pgid),
            stdout_path=str(out_dir / "stdout"),
            stderr_path=str(out_dir / "stderr"),
            started_at=job.started_at,
        )

    # ------------------------------------------------------------ ending jobs
    def cancel(self, job_id: JobId) -> None:
        """SIGTERM the job's group now; poll() sends SIGKILL after the grace period.

        A no-op for an unknown job, one already ending, or one that has already exited.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.kill_reason is not None or job.ended is not None:
                return
            if not job.sandboxed and (
                job.returncode is not None
                or (job.popen is not None and job.popen.poll() is not None)
            ):
                return
            self._terminate(job, JobState.CANCELLED)

    def _terminate(self, job: Running, reason: JobState) -> None:
        job.kill_reason = reason
        job.kill_at = time.monotonic() + self._grace
        signal_group(job.pgid, signal.SIGTERM)

    def _kill(self, job: Running) -> None:
        """SIGKILL everything of the job: its group and, sandboxed, its whole namespace."""
        job.sigkilled = True
        signal_group(job.pgid, signal.SIGKILL)
        if job.sandboxed and job.status is not None:
            kill_sandbox(job.status)

    def _enforce(self, job: Running) -> None:
        """For a job that still runs: time limit, then SIGKILL once grace is over."""
        if job.kill_reason is None:
            if 0 < job.time_limit_s < self._clock.now() - job.started_at:
                self._terminate(job, JobState.TIMEOUT)
        elif not job.sigkilled and job.kill_at is not None and time.monotonic() >= job.kill_at:
            self._kill(job)

    def _step(self, job: Running) -> None:
        """Move one job along; sets `job.ended` once nothing of it runs any more."""
        if job.ended is not None:
            return
        if job.sandboxed:
            self._step_sandboxed(job)
            return
        if job.popen is None:  # adopted: we are not its parent; watch the group instead
            if group_alive(job.pgid):
                self._enforce(job)
                return
            self._end(job, self._read_status(job))
            return
        if job.returncode is None:
            returncode = job.popen.poll()
            if returncode is None:
                self._enforce(job)
                return
            job.returncode = returncode
            # Whatever the leader left behind (background children) goes with it.
            signal_group(job.pgid, signal.SIGKILL)
        if not group_gone(job.pgid):
            return
        self._end(job, job.returncode)

    def _step_sandboxed(self, job: Running) -> None:
        """A sandboxed job runs until its main process exits (bwrap records its exit code)
        and then until its PID namespace is gone: what it left behind (background children,
        ``setsid()`` escapees) is killed with the namespace, since it may hold the GPUs."""
        if job.status is None:
            job.status = read_sandbox_status(job.status_path)
            if job.status is not None and job.popen is None and sandbox_is_ours(job.status):
                job.pgid = max(-1, process_group_of(job.status.child_pid))
        if job.popen is not None and job.returncode is None:
            returncode = job.popen.poll()
            if returncode is None:
                self._enforce(job)
                return
            job.returncode = returncode
        recorded = read_sandbox_status(job.status_path)
        finished = recorded is not None and recorded.exit_code is not None
        if job.status is not None and sandbox_is_ours(job.status):
            if finished:
                kill_sandbox(job.status)  # the main process is done: leftovers go with it
            else:
                self._enforce(job)  # bwrap's outer process is gone (a signal); the job is not
            return
        if job.popen is None and group_alive(job.pgid):
            self._enforce(job)
            return
        if job.pgid > 1 and not group_gone(job.pgid):
            # bwrap's outer process is gone and left no status (a signal reached it between
            # starting the namespace and writing the pid): the namespace's PID 1 is still in
            # the group and ignores SIGTERM, so only the group's SIGKILL can end the job.
            self._enforce(job)
            return
        returncode = job.returncode
        if recorded is not None and recorded.exit_code is not None:
            returncode = recorded.exit_code  # bwrap's word: the job's own exit status
        elif returncode is not None and returncode < 0:
            # bwrap itself was signalled (a SIGTERM to the group); the job ended after it.
            returncode = -signal.SIGKILL if job.sigkilled else returncode
        self._end(job, returncode)

    def _end(self, job: Running, returncode: int | None) -> None:
        job.ended = self._final_state(job, returncode)
        if job.ended.state is not JobState.COMPLETED:
            self._note_in_stderr(job, job.ended)

    @staticmethod
    def _read_status(job: Running) -> int | None:
        try:
            return int(job.status_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _final_state(self, job: Running, returncode: int | None) -> StateChange:
        return final_state(job, returncode, self._clock.now())

    def _note_in_stderr(self, job: Running, change: StateChange) -> None:
        """Tell the user, in the log they will read, why the job ended. The file is the
        job's: it is appended to only if it is still a regular file of its owner (a link
        the job left there would otherwise have root write through it)."""
        if job.owner_uid is None:
            return
        verb = "failed" if change.state is JobState.FAILED else "killed"
        note = f"\ngpucenter: job {verb}: {change.detail}\n".encode()
        try:
            append_to_owned_file(
                job.stderr_path, note, expected_uid=job.owner_uid, root=self._jobs_root
            )
        except OSError as exc:
            _log.warning("job %s: cannot append to %s (%s)", job.job_id, job.stderr_path, exc)

    def poll(self) -> Sequence[StateChange]:
        """Enforce time limits and grace periods; return the jobs that ended since last time.

        Call it regularly (the server loop does, every second or so): it is what turns a
        cancel or an exceeded time limit into SIGKILL after the grace period.
        """
        changes: list[StateChange] = []
        with self._lock:
            if self._sampler is not None:
                now = self._clock.now()
                if now - self._last_sample >= self._sample_every_s:
                    self._last_sample = now
                    self._sampler.sample()
            for job_id, job in list(self._jobs.items()):
                self._step(job)
                if job.ended is not None:
                    changes.append(self._with_utilisation(job.ended))
                    del self._jobs[job_id]
        return changes

    def _with_utilisation(self, change: StateChange) -> StateChange:
        """The final state with the run's measured mean GPU utilisation, where sampled."""
        if self._sampler is None:
            return change
        measured = self._sampler.finish(int(change.job_id))
        if measured is None:
            return change
        return replace(change, gpu_util=measured, measured_by="nvml")

    def wait_for_exit(self, job_id: JobId, timeout_s: float) -> bool:
        """Block until the job has ended, as poll() would see it.

        Escalates to SIGKILL after the grace period like poll(). The StateChange is kept
        for the next poll(). True when the job has ended (or is unknown), False on timeout.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None:
                    return True
                self._step(job)
                if job.ended is not None:
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def _latest(self, job_id: JobId, suffix: str) -> Path | None:
        return latest_run_file(self._spool, job_id, suffix)

    def adopt(
        self,
        job_id: JobId,
        external_id: str,
        started_at: Instant,
        time_limit_s: int,
        stderr_path: str | None,
    ) -> bool:
        """Watch a job started by an earlier server process (after a restart or failover).

        The job keeps running; its time limit is enforced from its original start. If it
        is gone already, the next poll() reports how it ended (from its status file). Returns
        False when the process cannot be proven to be that job (a sandbox: `sandbox_is_ours`;
        unsandboxed: the pid carries the job's id), in which case nothing is ever signalled
        and the job is reported as ended.
        """
        with self._lock:
            if job_id in self._jobs:
                return True
            err = Path(stderr_path) if stderr_path else self._log_dir / "adopted.err"
            sandbox_status = self._latest(job_id, ".json")
            if sandbox_status is not None:
                status = settled_status(sandbox_status)
                job = self._watch_sandbox(
                    job_id, sandbox_status, status, time_limit_s, started_at, err
                )
                self._jobs[job_id] = job
                mine = status is not None and sandbox_is_ours(status)
                _log.info("job %s adopted (sandbox, running and ours: %s)", job_id, mine)
                return mine
            try:
                pgid = int(external_id)
            except ValueError:
                pgid = -1
            # The environment marker is forgeable by any process of the same user: trusted
            # only where every job is the server's user anyway (the unsandboxed mode).
            trusted = not self._isolation.mode().sandboxed
            mine = trusted and pgid > 1 and runs_job(pgid, job_id)
            self._jobs[job_id] = Running(
                job_id=job_id,
                popen=None,
                pgid=pgid if mine else -1,  # never signal a stranger; the group counts as gone
                started_at=started_at,
                time_limit_s=time_limit_s,
                stderr_path=err,
                status_path=legacy_status_file(self._latest(job_id, ".pid"), self._spool),
                owner_uid=output_owner(err, self._jobs_root),
            )
            _log.info("job %s adopted (pid %s, still running: %s)", job_id, pgid, mine)
            return mine

    def detach(self) -> None:
        """Forget every job without stopping it: a later server process adopts them."""
        with self._lock:
            self._jobs.clear()

    def running_job_ids(self) -> frozenset[JobId]:
        """Jobs still tracked: running, being killed, or ended but not yet reported."""
        with self._lock:
            return frozenset(self._jobs)

    @staticmethod
    def _alive(job: Running) -> bool:
        if job.sandboxed and job.status is not None and sandbox_is_ours(job.status):
            return True
        if job.popen is not None:
            return job.popen.poll() is None
        return group_alive(job.pgid)

    def shutdown(self) -> None:
        """End every job: SIGTERM, SIGKILL after the grace period, then forget them.

        Blocks for at most the grace period plus a moment. Their StateChanges are not
        reported; on restart, the server treats jobs it had running as lost.
        """
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
        for job in jobs:
            if job.sandboxed and job.status is None:
                job.status = read_sandbox_status(job.status_path)
            if job.kill_reason is None and job.ended is None:
                self._terminate(job, JobState.CANCELLED)
        deadline = time.monotonic() + self._grace
        while time.monotonic() < deadline and any(self._alive(j) for j in jobs):
            time.sleep(0.02)
        for job in jobs:
            if job.ended is None:  # an ended job's group id may belong to someone else now
                self._kill(job)
        settle = time.monotonic() + 2.0
        for job in jobs:
            if job.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    job.popen.wait(timeout=max(0.0, settle - time.monotonic()))
            while not group_gone(job.pgid) and time.monotonic() < settle:
                time.sleep(0.01)
