"""A running sandbox seen from the server: its status file, whether it is ours, ending it.

bwrap writes JSON lines to the status file the server opened for it (``--json-status-fd``):
first ``{"child-pid": P, "pid-namespace": N, ...}`` (P is the sandbox's PID 1, the reaper, as
the host sees it), and ``{"exit-code": C}`` when the job's main process exits. The file lies in
the server's private spool, so the job can neither read nor forge it, and bwrap (not the
server) writes the exit code, so it is there even if the server was down when the job ended.

A job has ended only when its PID namespace is gone: background processes it left behind
(even ones that called ``setsid()`` to leave its process group) live on under P. SIGKILL to
P ends the namespace and everything in it, which the kernel guarantees. Before signalling P
after a restart, `sandbox_is_ours` proves P is still that sandbox: P runs as the server's uid
*and* its PID namespace is the recorded one. A recycled pid fails the namespace test, and a
user's own process fails the uid test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gpucenter.dispatch.isolation.identity import RunAs
from gpucenter.dispatch.isolation.safe_files import UnsafeFile, read_tail
from gpucenter.dispatch.isolation.sandbox import (
    SandboxError,
    SandboxJob,
    SandboxPolicy,
    prepare_sandbox,
    start_sandboxed,
)

__all__ = [
    "SandboxStatus",
    "device_minors",
    "kill_sandbox",
    "read_sandbox_status",
    "sandbox_is_ours",
    "sandbox_problem",
]


@dataclass(frozen=True, slots=True)
class SandboxStatus:
    """What bwrap recorded: its namespace's PID 1 and, once the job ended, the exit code."""

    child_pid: int
    pid_namespace: int
    exit_code: int | None = None


def read_sandbox_status(path: Path) -> SandboxStatus | None:
    """The status bwrap wrote so far; None while it has not started (or the file is unusable).

    Read with `safe_files.read_tail` (no links, regular file, the server's own, capped).
    """
    try:
        text = read_tail(path, expected_uid=os.geteuid(), max_bytes=64 * 1024).data.decode()
    except (OSError, UnicodeDecodeError):
        return None
    child_pid = namespace = 0
    exit_code: int | None = None
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if isinstance(record.get("child-pid"), int):
            child_pid = record["child-pid"]
            namespace = int(record.get("pid-namespace") or 0)
        if isinstance(record.get("exit-code"), int):
            exit_code = record["exit-code"]
    if child_pid <= 1:
        return None
    return SandboxStatus(child_pid, namespace, exit_code)


def sandbox_is_ours(status: SandboxStatus, *, proc: Path = Path("/proc")) -> bool:
    """True while `status.child_pid` is still that sandbox's PID 1, alive (see the module
    text); a zombie counts as gone."""
    where = proc / str(status.child_pid)
    try:
        owner = os.stat(where).st_uid
        namespace = os.readlink(where / "ns" / "pid")
        stat_line = (where / "stat").read_text()
    except OSError:
        return False
    state = stat_line[stat_line.rfind(")") + 2 :][:1]
    if state in ("Z", "X", ""):  # dead, not yet reaped: its namespace is gone
        return False
    return owner == os.geteuid() and namespace == f"pid:[{status.pid_namespace}]"


def kill_sandbox(status: SandboxStatus) -> bool:
    """SIGKILL the sandbox's PID 1, which ends every process in it; False if not ours (any
    more): nothing is signalled then."""
    if status.child_pid <= 1 or not sandbox_is_ours(status):
        return False
    try:
        os.kill(status.child_pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def sandbox_problem(policy: SandboxPolicy, *, timeout_s: float = 20.0) -> str | None:
    """Why sandboxed jobs cannot run here, or None: starts a real, trivial sandbox (as user
    nobody when root, to prove the identity switch too) and checks that it ran."""
    if not os.path.isfile(policy.bwrap):
        return f"{policy.bwrap} not found (apt-get install bubblewrap)"
    if os.geteuid() == 0 and not os.path.isfile(policy.setpriv):
        return f"{policy.setpriv} not found (util-linux)"
    with tempfile.TemporaryDirectory(prefix="gpucenter-probe-") as tmp:
        workdir = Path(tmp)
        run_as = RunAs("nobody", 65534, 65534) if os.geteuid() == 0 else None
        job = SandboxJob(0, ("/bin/sh", "-c", "test -d /proc/self"), workdir, run_as)
        try:
            prepared = prepare_sandbox(job, policy)
        except (SandboxError, UnsafeFile, OSError) as exc:
            return f"cannot prepare a sandbox: {exc}"
        with prepared, tempfile.TemporaryFile() as err:
            try:
                process = start_sandboxed(prepared, stdout=subprocess.DEVNULL, stderr=err.fileno())
            except OSError as exc:
                return f"cannot start {policy.bwrap}: {exc}"
            prepared.close()
            try:
                code = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return f"a trivial sandbox did not finish in {timeout_s:g} s"
            err.seek(0)
            message = err.read(2000).decode(errors="replace").strip()
    if code != 0:
        return f"a trivial sandbox failed (exit {code}): {message or 'no message'}"
    return None


def device_minors(proc: Path = Path("/proc")) -> dict[str, int]:
    """PCI bus id -> ``/dev/nvidia<minor>`` minor, from the driver's procfs.

    The minor is not the NVML index in general; the dispatcher binds the minors of the
    GPUs it placed the job on (NVML's nvmlDeviceGetMinorNumber gives the same number).
    """
    minors: dict[str, int] = {}
    base = proc / "driver" / "nvidia" / "gpus"
    if not base.is_dir():
        return minors
    for gpu in sorted(base.iterdir()):
        try:
            text = (gpu / "information").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Device Minor" and value.strip().isdigit():
                minors[gpu.name.lower()] = int(value.strip())
    return minors
