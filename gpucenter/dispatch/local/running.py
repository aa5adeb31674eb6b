"""What the local dispatcher keeps of a running job, and how a job's end is described."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gpucenter.dispatch.base import SiteUnavailable, StateChange
from gpucenter.dispatch.isolation.status import SandboxStatus
from gpucenter.dispatch.local.process_groups import describe_exit
from gpucenter.domain.clock import Instant
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState

__all__ = [
    "CLAIMED_ELSEWHERE",
    "WRAPPER",
    "Running",
    "claimed",
    "final_state",
    "start_wrapped",
]

# Unsandboxed runs go through a small wrapper that records the job's exit status in a file, so
# that a restarted server can re-adopt a running job and still learn how it ended. It catches
# (rather than ignores) TERM, INT and HUP: it outlives a signal the job itself chooses to
# survive, and a caught signal is reset to its default in the job it starts. (A sandboxed run
# needs none: bwrap writes the status file itself.)
# Its first act *claims* the run: it creates the run's marker only if no process has
# (noclobber), and otherwise exits with CLAIMED_ELSEWHERE without running the command. The
# claim is made by the process that would run the job, not checked by the server before it
# forks, so that a server paused between its checks and the fork (SIGSTOP, deposed as leader
# meanwhile) can never run a job a second time when it wakes up.
CLAIMED_ELSEWHERE = 75
CLAIM_WAIT_S = 10.0
WRAPPER = (
    f'{{ set -C; printf "%s" "$$" > "$3"; }} 2>/dev/null || exit {CLAIMED_ELSEWHERE}; set +C; '
    'trap : TERM INT HUP; "$0" -c "$2"; rc=$?; '
    'printf "%s" "$rc" > "$1.tmp" && mv -f "$1.tmp" "$1"; exit "$rc"'
)


def claimed(popen: subprocess.Popen[bytes], marker: Path) -> bool:
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


@dataclass(slots=True)
class Running:
    """What the dispatcher tracks for one job until its StateChange is handed out."""

    job_id: JobId
    popen: subprocess.Popen[bytes] | None  # None for a job adopted after a restart
    pgid: int  # -1: not proven ours, never signalled
    started_at: Instant
    time_limit_s: int
    stderr_path: Path
    status_path: Path
    sandboxed: bool = False
    status: SandboxStatus | None = None  # sandboxed: what bwrap recorded
    owner_uid: int | None = None  # who owns the output files (None: unknown, no note)
    kill_reason: JobState | None = None  # CANCELLED or TIMEOUT once we decided to end it
    kill_at: float | None = None  # monotonic time at which SIGKILL follows SIGTERM
    sigkilled: bool = False
    returncode: int | None = None
    ended: StateChange | None = None


def final_state(job: Running, returncode: int | None, now: Instant) -> StateChange:
    """The job's end as the control plane records it, from how its process ended."""
    if returncode is None:
        if job.kill_reason is None:
            return StateChange(
                job.job_id,
                JobState.FAILED,
                now,
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
    return StateChange(job.job_id, state, now, exit_code, detail)


def start_wrapped(
    shell: str,
    command: str,
    workdir: Path,
    env: Mapping[str, str],
    files: Mapping[str, int],
    status: Path,
    marker: Path,
    umask: int = 0o077,
) -> subprocess.Popen[bytes]:
    """An unsandboxed run: `command` under `WRAPPER`, in a session of its own, with `umask`."""
    status.unlink(missing_ok=True)
    try:
        return subprocess.Popen(
            [shell, "-c", WRAPPER, shell, str(status), command, str(marker)],
            cwd=workdir,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=files["stdout"],
            stderr=files["stderr"],
            start_new_session=True,
            umask=umask,
        )
    except OSError as exc:
        raise SiteUnavailable(f"cannot start {shell}: {exc}") from exc
