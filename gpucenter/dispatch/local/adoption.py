"""Taking over jobs an earlier server process started (after a restart or a failover).

A sandboxed run is trusted only when `sandbox_is_ours` proves it: the status file bwrap wrote
into the server's private spool names the PID namespace's init, which must still be root's
(the server's) and in that very namespace; a recycled pid fails the namespace test, a user's
own process the owner test. An unsandboxed run (single-user, every job the server's own user)
is recognised by the job id its wrapper carries in its environment. Whatever is not proven
is never signalled.
"""

from __future__ import annotations

import time
from pathlib import Path

from gpucenter.dispatch.base import LaunchRequest
from gpucenter.dispatch.isolation.safe_files import owner_of_dir
from gpucenter.dispatch.isolation.status import (
    SandboxStatus,
    read_sandbox_status,
    sandbox_is_ours,
)
from gpucenter.dispatch.local.process_groups import process_group_of, runs_job
from gpucenter.dispatch.local.running import Running
from gpucenter.domain.clock import Clock, Instant
from gpucenter.domain.ids import JobId

__all__ = [
    "latest_run_file",
    "legacy_status_file",
    "mtime_or",
    "output_owner",
    "settled_status",
    "watch_orphan",
    "watch_sandbox",
]


def latest_run_file(spool: Path, job_id: JobId, suffix: str) -> Path | None:
    """The spool file of the job's latest run (`adopt` is not told which run it is)."""
    found = []
    for path in spool.glob(f"job-{job_id}.run-*{suffix}"):
        run = path.name.removeprefix(f"job-{job_id}.run-").removesuffix(suffix)
        if run.isdigit():
            found.append((int(run), path))
    return max(found)[1] if found else None


def output_owner(stderr_path: Path, jobs_root: Path) -> int | None:
    """Who owns a run's output directory (its files must be theirs); None when the path
    is not one of this dispatcher's run directories."""
    if jobs_root not in stderr_path.parents:
        return None
    try:
        return owner_of_dir(stderr_path.parent, root=jobs_root)
    except OSError:
        return None


def watch_sandbox(
    job_id: JobId,
    status_path: Path,
    status: SandboxStatus | None,
    time_limit_s: int,
    started_at: Instant,
    stderr_path: Path,
    jobs_root: Path,
) -> Running:
    """A sandboxed run this process did not start (a restart, a failover): watched by its
    status file, and signalled only when `sandbox_is_ours` proves it is that sandbox."""
    mine = status is not None and sandbox_is_ours(status)
    pgid = process_group_of(status.child_pid) if mine and status is not None else -1
    return Running(
        job_id=job_id,
        popen=None,
        pgid=pgid if pgid > 1 else -1,
        started_at=started_at,
        time_limit_s=time_limit_s,
        stderr_path=stderr_path,
        status_path=status_path,
        sandboxed=True,
        status=status,
        owner_uid=output_owner(stderr_path, jobs_root),
    )


def watch_orphan(
    request: LaunchRequest,
    marker: Path,
    out_dir: Path,
    status_path: Path,
    jobs_root: Path,
    clock: Clock,
) -> Running:
    """An unsandboxed run whose start the database never recorded, found by its pid marker;
    its group id is -1 (never signalled) unless the pid carries the job's id."""
    try:
        pid = int(marker.read_text().strip() or "0")
        started_at = marker.stat().st_mtime
    except (OSError, ValueError):
        pid, started_at = 0, clock.now()
    mine = pid > 0 and runs_job(pid, request.job_id)
    return Running(
        job_id=request.job_id,
        popen=None,
        pgid=pid if mine else -1,  # never signal a stranger that reused the pid
        started_at=started_at,
        time_limit_s=request.time_limit_s,
        stderr_path=out_dir / "stderr",
        status_path=status_path,
        owner_uid=output_owner(out_dir / "stderr", jobs_root),
    )


def mtime_or(path: Path, default: Instant) -> Instant:
    """When a status file was written (bwrap writes it as the sandbox starts)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return default


def legacy_status_file(marker: Path | None, spool: Path) -> Path:
    """The unsandboxed wrapper's exit status file beside its pid marker."""
    if marker is None:
        return spool / "unknown.status"
    return marker.with_name(marker.name.removesuffix(".pid") + ".status")


def settled_status(path: Path, wait_s: float = 2.0) -> SandboxStatus | None:
    """The status of a sandbox another process started: bwrap writes it a moment after
    its start, so an empty file is given that moment before it counts as no sandbox."""
    deadline = time.monotonic() + wait_s
    while True:
        status = read_sandbox_status(path)
        if status is not None or time.monotonic() >= deadline:
            return status
        time.sleep(0.02)
