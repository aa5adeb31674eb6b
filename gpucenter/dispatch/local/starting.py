"""Getting one job ready to start on the local site: who it runs as, its directories, its
environment. Everything here either succeeds or raises `DispatchError` with a reason for the
job's owner: a job is never started with less isolation than its mode asks for.

Directories (see `LocalIsolation`): each run of a job gets a fresh directory
``<jobs_root>/job-<id>.run-<n>/`` made by the server with `prepare_job_output` (the parent is
root's and writable by nobody else; the directory and its ``stdout``/``stderr`` are handed to
the owner only after the server created them), which is also the default working directory.
A multi-tenant job's owner has a home (``<home_root>/<account>``, 0700) and its project a
shared space (``<projects_root>/<group>``, root:group 2770, setgid); both are made on first
use, without following links, and are the only other places a job may name as its working
directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpucenter.dispatch.base import DispatchError, LaunchRequest
from gpucenter.dispatch.isolation.identity import RunAs
from gpucenter.dispatch.isolation.mode import ModeDecision
from gpucenter.dispatch.isolation.safe_files import (
    JobOutput,
    UnsafeFile,
    make_owned_dir,
    open_dir_beneath,
    prepare_job_output,
)
from gpucenter.dispatch.isolation.unix_accounts import IdentityError, owner_identity, unix_name
from gpucenter.dispatch.local.isolation import LocalIsolation

__all__ = [
    "check_request_text",
    "gpu_minors",
    "job_directory_name",
    "job_vars",
    "make_output",
    "output_sharing",
    "physical_gpus",
    "project_space",
    "resolve_identity",
    "working_directory",
]


def job_directory_name(request: LaunchRequest) -> str:
    """One directory per run: a requeued job never writes into its last run's files."""
    return f"job-{request.job_id}.run-{request.run}"


def check_request_text(request: LaunchRequest) -> None:
    """Refuse what no process can be started with (a NUL byte ends a C string: the kernel
    would see another command, and Python raises ValueError deep in Popen)."""
    fields: dict[str, str] = {"command": request.command, "project": request.project}
    fields["owner"] = request.owner.username
    if request.workdir is not None:
        fields["workdir"] = request.workdir
    for name, value in request.env.items():
        fields[f"env name {name!r}"] = name
        fields[f"env {name}"] = value
    for label, text in fields.items():
        if "\0" in text:
            raise DispatchError(f"job {request.job_id}: {label} contains a NUL byte")


def resolve_identity(
    request: LaunchRequest, isolation: LocalIsolation, decision: ModeDecision
) -> RunAs | None:
    """The owner's Unix identity (multi-tenant), or None: the server's own (single-user)."""
    if not decision.switch_user:
        return None
    if isolation.accounts is None:
        raise DispatchError("multi-tenant isolation without an account policy: refused")
    owner = request.owner
    try:
        return owner_identity(
            owner.username,
            owner.uid,
            owner.gid,
            request.project,
            int(request.project_id),
            isolation.accounts,
        )
    except IdentityError as exc:
        raise DispatchError(f"job {request.job_id} cannot run as its owner: {exc}") from exc


def ensure_home(run_as: RunAs) -> None:
    """The owner's home (0700, theirs), made on first use below a root-owned parent."""
    home = run_as.home
    if home is None:
        return
    home.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        make_owned_dir(
            home.parent,
            home.name,
            uid=run_as.uid,
            gid=run_as.gid,
            mode=0o700,
            root=home.parent,
            exist_ok=True,
        )
    except (UnsafeFile, OSError) as exc:
        raise DispatchError(f"home directory {home}: {exc}") from exc


def project_space(
    isolation: LocalIsolation, request: LaunchRequest, run_as: RunAs | None
) -> Path | None:
    """The project's shared space (multi-tenant), made on first use: root's, group the
    project's, 2770 (setgid, so that files made there stay the project's)."""
    root = isolation.projects_root
    if root is None or run_as is None or not run_as.groups or isolation.accounts is None:
        return None
    name = unix_name(isolation.accounts.group_prefix, request.project, int(request.project_id))
    root.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        return make_owned_dir(
            root, name, uid=0, gid=run_as.groups[0], mode=0o2770, root=root, exist_ok=True
        )
    except (UnsafeFile, OSError) as exc:
        raise DispatchError(f"project space of {request.project!r}: {exc}") from exc


def make_output(
    jobs_root: Path, name: str, uid: int, gid: int, sharing: OutputSharing | None = None
) -> JobOutput:
    """The run's fresh directory with its stdout and stderr, owned by `uid`:`gid` (the
    project's group where the project shares outputs), with `sharing`'s modes.

    A directory already there under the name was left by a server that died between making
    it and starting the job (a start that happened is adopted before this is reached): it is
    renamed aside, never reused, and a fresh one is made.
    """
    modes = sharing or PRIVATE

    def make() -> JobOutput:
        return prepare_job_output(
            jobs_root,
            name,
            uid=uid,
            gid=gid,
            root=jobs_root,
            dir_mode=modes.dir_mode,
            file_mode=modes.file_mode,
        )

    try:
        return make()
    except UnsafeFile as exc:
        if "already exists" not in exc.reason:
            raise DispatchError(f"cannot make {jobs_root / name}: {exc.reason}") from exc
    except OSError as exc:
        raise DispatchError(f"cannot make {jobs_root / name}: {exc}") from exc
    parent = open_dir_beneath(jobs_root, root=jobs_root)
    try:
        aside = f"{name}.stale-{time.time_ns()}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(name, aside, src_dir_fd=parent, dst_dir_fd=parent)
    finally:
        os.close(parent)
    try:
        return make()
    except OSError as exc:
        raise DispatchError(f"cannot make {jobs_root / name}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class OutputSharing:
    """Who may read a run's outputs: its directory's and files' modes, the group they
    belong to (None: the owner's own), and the umask the job runs with, so that the files
    it makes itself follow the same rule. Never world-readable."""

    dir_mode: int
    file_mode: int
    umask: int
    group: int | None = None


PRIVATE = OutputSharing(dir_mode=0o700, file_mode=0o600, umask=0o077)


def output_sharing(request: LaunchRequest, run_as: RunAs | None) -> OutputSharing:
    """Group-readable by the project's group (2750 setgid / 0640, umask 027) where the
    project shares its outputs and the job runs as its owner with that group; the owner's
    alone (0700/0600, umask 077) otherwise."""
    if request.share_outputs and run_as is not None and run_as.groups:
        return OutputSharing(0o2750, 0o640, 0o027, run_as.groups[0])
    return PRIVATE


def _within(path: Path, tree: Path) -> bool:
    return path == tree or tree in path.parents


def working_directory(
    request: LaunchRequest, output: Path, run_as: RunAs | None, project_dir: Path | None
) -> Path:
    """The run's own directory, or the one the job names: an existing absolute directory,
    and for a job run as its owner one in their home or their project's space (the only
    other places it can write)."""
    if request.workdir is None:
        return output
    path = Path(request.workdir)
    if not path.is_absolute() or os.path.normpath(request.workdir) != request.workdir:
        raise DispatchError(
            f"job {request.job_id}: working directory {request.workdir!r} must be an absolute, "
            "normalised path"
        )
    if run_as is not None:
        allowed = [p for p in (run_as.home, project_dir) if p is not None]
        if not any(_within(path, tree) for tree in allowed):
            places = " or ".join(str(p) for p in allowed) or "nowhere"
            raise DispatchError(
                f"job {request.job_id}: working directory {request.workdir!r} must lie in "
                f"{places} (the owner's home or the project's space)"
            )
    try:
        is_dir = path.is_dir()
    except OSError as exc:
        is_dir = exc.errno == errno.EACCES
    if not is_dir:
        raise DispatchError(
            f"job {request.job_id}: working directory {request.workdir!r} "
            "does not exist or is not a directory"
        )
    return path


def physical_gpus(
    request: LaunchRequest, index_map: Mapping[str, Sequence[int]]
) -> list[tuple[str, int]]:
    """(node, physical NVML index) of each GPU of the placement, in placement order: slot
    ``i`` of node ``n`` is ``index_map[n][i]``, the identity for nodes not in the map."""
    found: list[tuple[str, int]] = []
    for part in request.placement:
        slots = index_map.get(part.node)
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
            found.append((part.node, index))
    return found


def gpu_minors(physical: Sequence[tuple[str, int]], isolation: LocalIsolation) -> tuple[int, ...]:
    """The device minors to bind into the sandbox: GPUs on nodes with real devices only."""
    minors = isolation.gpu_minors
    return tuple(
        sorted({minors.get(i, i) for node, i in physical if node in isolation.device_nodes})
    )


def job_vars(
    request: LaunchRequest, visible: str, project_dir: Path | None = None
) -> dict[str, str]:
    """What the dispatcher sets last, over the job's own variables: its GPUs (the placement
    alone decides them), its id and nodes, its index within an array, and where its
    project's shared space is (multi-tenant)."""
    found: Mapping[str, str] = {
        "CUDA_VISIBLE_DEVICES": visible,
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # CUDA numbers GPUs as NVML/nvidia-smi do
        "GPUCENTER_JOB_ID": str(request.job_id),
        "GPUCENTER_NODES": ",".join(dict.fromkeys(p.node for p in request.placement)),
    }
    values = dict(found)
    task = request.env.get("GPUCENTER_ARRAY_TASK_ID")
    if request.array_index is not None:
        task = str(request.array_index)
    if task is not None:
        values["GPUCENTER_ARRAY_TASK_ID"] = task
    if project_dir is not None:
        values["GPUCENTER_PROJECT_DIR"] = str(project_dir)
    return values
