"""The local dispatcher: each scheduled job runs as a real process group on this machine.

The embedded default (one machine, zero set-up). Each job is ``/bin/bash -c <command>`` in
its own session and process group, sees only its GPUs through ``CUDA_VISIBLE_DEVICES``
(physical NVML indices, with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so CUDA numbers GPUs the same
way), and writes to ``log_dir/job-<id>.out`` and ``.err``.

Placements over several nodes: a local site may declare several *virtual* nodes on one
machine. Such a job still runs as ONE process; ``CUDA_VISIBLE_DEVICES`` lists the physical
GPUs of every node of its placement in placement order (duplicates dropped: CUDA stops reading
the list at a repeated index), and ``GPUCENTER_NODES`` names the nodes, comma separated (set
for single-node jobs too, so job scripts need no special case).

Ending jobs: ``cancel()`` and the time limit send SIGTERM to the group and, if it is still
alive ``kill_grace_s`` seconds later, SIGKILL; neither blocks, ``poll()`` escalates. A job is
reported ended only once its whole process group is gone (leftover background children are
SIGKILLed), because until then it may hold its GPUs. Time limits follow the given `Clock`
(the scheduler's); the grace period is real time (`time.monotonic`): it is how long a real
process gets to clean up.

Limits of a process-group executor (cgroups on a cluster have none): a process that calls
``setsid()`` escapes its group; GPU visibility is a convention CUDA honours, not isolation.
On Linux the dispatcher makes its process a *child subreaper*, so orphaned grandchildren are
re-parented to it and reaped here (container PID 1s often reap nothing, leaving zombies).
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
from dataclasses import dataclass, replace
from pathlib import Path

from gpucenter.dispatch.base import (
    DispatchError,
    Launched,
    LaunchRequest,
    SiteCapabilities,
    SiteKind,
    SiteUnavailable,
    StateChange,
)
from gpucenter.dispatch.gpuutil import UtilisationSampler
from gpucenter.dispatch.local.process_groups import (
    become_subreaper,
    describe_exit,
    group_alive,
    group_gone,
    runs_job,
    signal_group,
)
from gpucenter.domain.clock import Clock, Instant, SystemClock
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState

__all__ = ["LocalDispatcher"]

_log = logging.getLogger(__name__)

# The shell that runs job commands (a module constant so tests can make it missing).
SHELL = "/bin/bash"

# The server's own settings (database URL, secret key) live under this prefix: never leak them.
_SERVER_PREFIX = "GPUCENTER_"
# Device selection must come from the placement alone, never from the server's environment.
_DEVICE_VARS = frozenset(
    {"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"}
    | {"ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL"}
)
# Names that look like credentials of the server's operator are not passed to user jobs.
_SECRET_MARKERS = (
    *("PASSWORD", "PASSWD", "SECRET", "TOKEN"),
    *("CREDENTIAL", "PRIVATE_KEY", "API_KEY", "ACCESS_KEY"),
)
# The job runs under a small wrapper that records its exit status in a file, so that a
# restarted server can re-adopt a running job and still learn how it ended. The wrapper
# catches (rather than ignores) TERM, INT and HUP: it outlives a signal the job itself
# chooses to survive, and a caught signal is reset to its default in the job it starts.
# Its first act *claims* the run: it creates the run's marker only if no process has
# (noclobber), and otherwise exits with CLAIMED_ELSEWHERE without running the command. The
# claim is made by the process that would run the job, not checked by the server before it
# forks, so that a server paused between its checks and the fork (SIGSTOP, deposed as
# leader meanwhile) can never run a job a second time when it wakes up. The server opens the
# logs for appending and the wrapper empties them once it holds the claim, so that a start
# that loses the claim never truncates the output of the run that holds it.
CLAIMED_ELSEWHERE = 75
CLAIM_WAIT_S = 10.0
_WRAPPER = (
    f'{{ set -C; printf "%s" "$$" > "$3"; }} 2>/dev/null || exit {CLAIMED_ELSEWHERE}; set +C; '
    ': > "$4"; : > "$5"; rm -f "$1"; trap : TERM INT HUP; "$0" -c "$2"; rc=$?; '
    'printf "%s" "$rc" > "$1.tmp" && mv -f "$1.tmp" "$1"; exit "$rc"'
)


def _claimed(popen: subprocess.Popen[bytes], marker: Path) -> bool:
    """Whether `popen`'s wrapper holds the run's claim: its pid is in the marker, or it did
    not exit with CLAIMED_ELSEWHERE (the claim is its first act, so this takes a moment)."""
    deadline = time.monotonic() + CLAIM_WAIT_S
    while True:
        code = popen.poll()  # before the marker: a run that claimed and ended at once is ours
        try:
            if marker.read_text().strip() == str(popen.pid):
                return True
        except OSError:
            pass
        if code is not None:
            return code != CLAIMED_ELSEWHERE
        if time.monotonic() > deadline:
            return True  # still running past its claim: ours
        time.sleep(0.002)


def _inherited_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of the server's environment a job may see (PATH, HOME, locale, ...)."""
    return {
        name: value
        for name, value in environ.items()
        if not name.startswith(_SERVER_PREFIX)
        and name not in _DEVICE_VARS
        and not any(marker in name.upper() for marker in _SECRET_MARKERS)
    }


@dataclass(slots=True)
class _Running:
    """What the dispatcher tracks for one job until its StateChange is handed out."""

    job_id: JobId
    popen: subprocess.Popen[bytes] | None  # None for a job adopted after a restart
    pgid: int
    started_at: Instant
    time_limit_s: int
    stderr_path: Path
    status_path: Path
    kill_reason: JobState | None = None  # CANCELLED or TIMEOUT once we decided to end it
    kill_at: float | None = None  # monotonic time at which SIGKILL follows SIGTERM
    sigkilled: bool = False
    returncode: int | None = None
    ended: StateChange | None = None


class LocalDispatcher:
    """Runs jobs as local process groups; implements the `Dispatcher` protocol.

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
    ) -> None:
        """`sampler` (NVML) measures the GPU utilisation of jobs placed wholly on
        `measured_nodes` (nodes with real GPUs), every `sample_every_s` on poll."""
        if kill_grace_s < 0:
            raise ValueError("kill_grace_s must not be negative")
        self._log_dir = Path(log_dir)
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._grace = kill_grace_s
        self._index_map = {node: tuple(ix) for node, ix in (gpu_index_map or {}).items()}
        self._jobs: dict[JobId, _Running] = {}
        self._lock = threading.Lock()
        self._sampler = sampler
        self._measured_nodes = measured_nodes
        self._sample_every_s = sample_every_s
        self._last_sample: Instant = float("-inf")
        self._capabilities = SiteCapabilities(
            SiteKind.LOCAL,
            containers=False,
            adopts_after_restart=True,  # by process group and the wrapper's status file
            reports_utilisation=sampler is not None and bool(measured_nodes),
            enforces_time_limit=True,
        )
        become_subreaper()

    @property
    def capabilities(self) -> SiteCapabilities:
        return self._capabilities

    @property
    def unavailable(self) -> str:
        """Always empty: this machine is the site; a failure to start raises instead."""
        return ""

    # ----------------------------------------------------------------- submit
    def visible_devices(self, request: LaunchRequest) -> str:
        """The CUDA_VISIBLE_DEVICES value for a placement: physical indices, node order."""
        physical: list[int] = []
        for part in request.placement:
            slots = self._index_map.get(part.node)
            for slot in part.gpus:
                if slots is None:
                    index = slot
                elif 0 <= slot < len(slots):
                    index = slots[slot]
                else:
                    raise DispatchError(
                        f"job {request.job_id}: node {part.node!r} has no GPU slot {slot} "
                        f"(it has {len(slots)})"
                    )
                if index not in physical:
                    physical.append(index)
        return ",".join(str(i) for i in physical)

    def _environment(self, request: LaunchRequest) -> dict[str, str]:
        env = _inherited_environment(os.environ)
        env.update(request.env)
        # Set last, so that neither the server's nor the job's own env can widen its GPUs.
        env["CUDA_VISIBLE_DEVICES"] = self.visible_devices(request)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA numbers GPUs as NVML/nvidia-smi do
        env["GPUCENTER_JOB_ID"] = str(request.job_id)
        env["GPUCENTER_NODES"] = ",".join(dict.fromkeys(p.node for p in request.placement))
        return env

    def _workdir(self, request: LaunchRequest) -> Path:
        if request.workdir is None:
            workdir = self._log_dir / f"job-{request.job_id}"
            try:
                workdir.mkdir(exist_ok=True)
            except OSError as exc:
                raise DispatchError(
                    f"job {request.job_id}: cannot create {workdir}: {exc}"
                ) from exc
            return workdir
        workdir = Path(request.workdir)
        if not workdir.is_dir():
            raise DispatchError(
                f"job {request.job_id}: working directory {request.workdir!r} "
                "does not exist or is not a directory"
            )
        return workdir

    def submit(self, request: LaunchRequest) -> Launched:
        """Start the job now; raises DispatchError if it cannot start (the job stays queued)."""
        with self._lock:  # held throughout, so that one job id cannot start twice
            return self._start(request)

    def _start(self, request: LaunchRequest) -> Launched:
        if request.job_id in self._jobs:
            raise DispatchError(f"job {request.job_id} is already running here")
        if request.image is not None:
            raise DispatchError(f"job {request.job_id}: this site runs no container images")
        out_path = self._log_dir / f"job-{request.job_id}.out"
        err_path = self._log_dir / f"job-{request.job_id}.err"
        status_path = self._status_path(request.job_id)
        marker = self._marker_path(request)
        if marker.exists():
            # An earlier server process started this very run and died before the database
            # said so: adopt that process (or its exit status) instead of starting it twice.
            return self._adopt_orphan(request, marker, out_path, err_path, status_path)
        env = self._environment(request)
        cwd = self._workdir(request)
        try:
            with out_path.open("ab") as out, err_path.open("ab") as err:
                popen = subprocess.Popen(
                    [
                        *(SHELL, "-c", _WRAPPER, SHELL, str(status_path), request.command),
                        *(str(marker), str(out_path), str(err_path)),
                    ],
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
        except OSError as exc:
            raise SiteUnavailable(f"cannot start {SHELL}: {exc}") from exc
        # The wrapper claims the run by writing the marker as its first act (never the server:
        # the claim must be the starting process's own, see _WRAPPER). Another process may
        # hold it already (a start the database never recorded, made after this server looked
        # for the marker): then that run is the one this start stands for, adopted.
        if not _claimed(popen, marker):
            return self._adopt_orphan(request, marker, out_path, err_path, status_path)
        if self._sampler is not None and all(
            part.node in self._measured_nodes for part in request.placement
        ):
            indices = [int(i) for i in env["CUDA_VISIBLE_DEVICES"].split(",") if i]
            self._sampler.start(int(request.job_id), indices)
        started_at = self._clock.now()
        self._jobs[request.job_id] = _Running(
            job_id=request.job_id,
            popen=popen,
            pgid=popen.pid,  # start_new_session: the leader's pid is the group id
            started_at=started_at,
            time_limit_s=request.time_limit_s,
            stderr_path=err_path,
            status_path=status_path,
        )
        _log.info("job %s started as pid %d", request.job_id, popen.pid)
        return Launched(
            job_id=request.job_id,
            external_id=str(popen.pid),
            stdout_path=str(out_path),
            stderr_path=str(err_path),
            started_at=started_at,
        )

    def _marker_path(self, request: LaunchRequest) -> Path:
        """Written by the job's wrapper as its first act: this run of this job has started."""
        return self._log_dir / f"job-{request.job_id}.run-{request.run}.pid"

    def _adopt_orphan(
        self,
        request: LaunchRequest,
        marker: Path,
        out_path: Path,
        err_path: Path,
        status_path: Path,
    ) -> Launched:
        try:
            pid = int(marker.read_text().strip() or "0")
            started_at = marker.stat().st_mtime
        except (OSError, ValueError):
            pid, started_at = 0, self._clock.now()
        mine = pid > 0 and runs_job(pid, request.job_id)
        self._jobs[request.job_id] = _Running(
            job_id=request.job_id,
            popen=None,
            pgid=pid if mine else -1,  # never signal a stranger that reused the pid
            started_at=started_at,
            time_limit_s=request.time_limit_s,
            stderr_path=err_path,
            status_path=status_path,
        )
        _log.warning(
            "job %s run %d was started before a restart (pid %d, still running: %s); adopted",
            request.job_id,
            request.run,
            pid,
            mine,
        )
        return Launched(
            job_id=request.job_id,
            external_id=str(pid),
            stdout_path=str(out_path),
            stderr_path=str(err_path),
            started_at=started_at,
        )

    # ------------------------------------------------------------ ending jobs
    def cancel(self, job_id: JobId) -> None:
        """SIGTERM the job's group now; poll() sends SIGKILL after the grace period.

        A no-op for an unknown job, one already ending, or one that has already exited.
        """
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.kill_reason is not None or job.returncode is not None:
                return
            if job.popen is not None and job.popen.poll() is not None:
                return
            self._terminate(job, JobState.CANCELLED)

    def _terminate(self, job: _Running, reason: JobState) -> None:
        job.kill_reason = reason
        job.kill_at = time.monotonic() + self._grace
        signal_group(job.pgid, signal.SIGTERM)

    def _enforce(self, job: _Running) -> None:
        """For a job whose leader still runs: time limit, then SIGKILL once grace is over."""
        if job.kill_reason is None:
            if 0 < job.time_limit_s < self._clock.now() - job.started_at:
                self._terminate(job, JobState.TIMEOUT)
        elif not job.sigkilled and job.kill_at is not None and time.monotonic() >= job.kill_at:
            job.sigkilled = True
            signal_group(job.pgid, signal.SIGKILL)

    def _step(self, job: _Running) -> None:
        """Move one job along; sets `job.ended` once its leader exited and its group is gone."""
        if job.ended is not None:
            return
        if job.popen is None:  # adopted: we are not its parent; watch the group instead
            if group_alive(job.pgid):
                self._enforce(job)
                return
            job.ended = self._final_state(job, self._read_status(job))
            if job.ended.state is not JobState.COMPLETED:
                self._note_in_stderr(job, job.ended)
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
        job.ended = self._final_state(job, job.returncode)
        if job.ended.state is not JobState.COMPLETED:
            self._note_in_stderr(job, job.ended)

    @staticmethod
    def _read_status(job: _Running) -> int | None:
        try:
            return int(job.status_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _final_state(self, job: _Running, returncode: int | None) -> StateChange:
        if returncode is None:
            if job.kill_reason is None:
                return StateChange(
                    job.job_id,
                    JobState.FAILED,
                    self._clock.now(),
                    None,
                    "ended while gpucenter was not watching; its exit status is unknown",
                )
            returncode = -signal.SIGKILL if job.sigkilled else -signal.SIGTERM
        exit_code, how = describe_exit(returncode)
        if job.kill_reason is JobState.TIMEOUT:
            state, detail = JobState.TIMEOUT, f"time limit of {job.time_limit_s} s exceeded"
            detail += f" ({how})"
        elif job.kill_reason is JobState.CANCELLED:
            state, detail = JobState.CANCELLED, f"cancelled ({how})"
        elif returncode == 0:
            state, detail = JobState.COMPLETED, how
        else:
            state, detail = JobState.FAILED, how
        return StateChange(job.job_id, state, self._clock.now(), exit_code, detail)

    @staticmethod
    def _note_in_stderr(job: _Running, change: StateChange) -> None:
        """Tell the user, in the log they will read, why the job ended."""
        verb = "failed" if change.state is JobState.FAILED else "killed"
        try:
            with job.stderr_path.open("a") as err:
                err.write(f"\ngpucenter: job {verb}: {change.detail}\n")
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
        """Block until the job's whole process group is gone, as poll() would see it.

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

    def _status_path(self, job_id: JobId) -> Path:
        return self._log_dir / f"job-{job_id}.status"

    def adopt(
        self,
        job_id: JobId,
        external_id: str,
        started_at: Instant,
        time_limit_s: int,
        stderr_path: str | None,
    ) -> bool:
        """Watch a job started by an earlier server process (after a restart or failover).

        The job keeps running; its time limit is enforced from its original start. If its
        process is gone already, the next poll() reports how it ended (from the status file
        the wrapper wrote). Returns False if `external_id` now belongs to another process,
        in which case the job is reported as ended too.
        """
        try:
            pgid = int(external_id)
        except ValueError:
            return False
        with self._lock:
            if job_id in self._jobs:
                return True
            job = _Running(
                job_id=job_id,
                popen=None,
                pgid=pgid,
                started_at=started_at,
                time_limit_s=time_limit_s,
                stderr_path=Path(stderr_path) if stderr_path else self._log_dir / "adopted.err",
                status_path=self._status_path(job_id),
            )
            mine = runs_job(pgid, job_id)
            if not mine:
                job.pgid = -1  # never signal a stranger; the group counts as gone
            self._jobs[job_id] = job
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

    def shutdown(self) -> None:
        """End every job: SIGTERM, SIGKILL after the grace period, then forget them.

        Blocks for at most the grace period plus a moment. Their StateChanges are not
        reported; on restart, the server treats jobs it had running as lost.
        """
        with self._lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
        for job in jobs:
            if job.kill_reason is None and job.ended is None:
                self._terminate(job, JobState.CANCELLED)
        deadline = time.monotonic() + self._grace
        while time.monotonic() < deadline and any(
            group_alive(j.pgid) if j.popen is None else j.popen.poll() is None for j in jobs
        ):
            time.sleep(0.02)
        for job in jobs:
            if job.ended is None:  # an ended job's group id may belong to someone else now
                signal_group(job.pgid, signal.SIGKILL)
        settle = time.monotonic() + 2.0
        for job in jobs:
            if job.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    job.popen.wait(timeout=max(0.0, settle - time.monotonic()))
            while not group_gone(job.pgid) and time.monotonic() < settle:
                time.sleep(0.01)
