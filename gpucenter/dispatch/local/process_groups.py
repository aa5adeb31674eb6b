"""POSIX process groups for the local executor: signal, reap, and tell whether one still runs.

A job runs as its own session and process group; it has ended only when the whole group is
gone (leftover background children may still hold its GPUs), and the dispatcher, made a
child subreaper on Linux, reaps what is re-parented to it. A pid read back after a server
restart is trusted only if that process still carries the job's id in its environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
from pathlib import Path

from gpucenter.domain.ids import JobId

_log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Have orphaned descendants re-parented to this process, so that we can reap them."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            _log.warning("prctl(PR_SET_CHILD_SUBREAPER) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        _log.warning("cannot become a child subreaper (%s)", exc)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    if pgid <= 1:  # 0 would be our own group, 1 init's: never ours to signal
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def reap_group(pgid: int) -> None:
    """Collect exited (zombie) children of ours in the group, without blocking."""
    if pgid <= 1:
        return
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def group_gone(pgid: int) -> bool:
    """Reap what is dead in the group; True once nothing of it runs any more."""
    reap_group(pgid)
    if group_alive(pgid):
        return False
    reap_group(pgid)  # members that died since the first pass are zombies now
    return True


def group_alive(pgid: int) -> bool:
    """True while any process of the group still runs (zombies that we cannot reap don't)."""
    if pgid <= 1:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which sits in parentheses and may contain spaces.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def describe_exit(returncode: int) -> tuple[int, str]:
    """Exit code (128 + signal for a signal, as shells report it) and words for people."""
    if returncode < 0:
        sig = -returncode
        return 128 + sig, f"killed by signal {signal_name(sig)}"
    if 128 < returncode <= 128 + 64:  # how the wrapper's shell reports a signalled command
        return returncode, f"killed by signal {signal_name(returncode - 128)}"
    return returncode, f"exit code {returncode}"


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def runs_job(pid: int, job_id: JobId) -> bool:
    """Whether process `pid` is (still) the leader of gpucenter job `job_id`, not a stranger
    that reused the pid while the server was down."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"GPUCENTER_JOB_ID={job_id}".encode() in environ.split(b"\0")


def process_group_of(pid: int) -> int:
    """The process group of `pid` as /proc says, or -1 when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[2])
    except (IndexError, ValueError):
        return -1
