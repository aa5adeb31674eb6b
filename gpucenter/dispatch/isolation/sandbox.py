"""Run a job's command as its owner inside a bubblewrap (``bwrap``) sandbox, local site.

Install: ``apt-get install bubblewrap`` (Debian/Ubuntu; ``setpriv`` comes with util-linux).

**How identity switching works here.** The server (root) starts ``bwrap`` as root, without a
user namespace: root may create mount, PID, IPC and UTS namespaces directly, and the mounts it
makes inside are then real, root-owned mounts that the job cannot undo. bwrap's ``--uid`` and
``--gid`` only exist together with a user namespace, where "uid 200001" would be a mapping of
root, so they are not used. Instead the command bwrap starts is ``setpriv --reuid U --regid G
--groups P --inh-caps=-all --bounding-set=-all --no-new-privs -- <job>``: inside the finished
sandbox it drops to the owner's real uid/gid with only the job's project group, no
capabilities (not even in the bounding set), and no way back through setuid binaries. bwrap
itself stays as a root PID 1 in the namespace (the reaper); the job cannot signal or read it
(another uid), only see that it exists.

**What the job sees** (built from an empty root, so anything not listed does not exist):
``/usr`` and the ``/bin``, ``/sbin``, ``/lib*`` links read-only; ``/etc`` read-only with
secrets replaced by empty mode-0000 files or directories (shadow files, munge key,
``slurmdbd.conf``, SSH host keys, TLS private keys, gpucenter's own config, plus
`SandboxPolicy.hidden_paths`), and, with `SandboxPolicy.tenant_ids`, ``/etc/passwd`` and
``/etc/group`` without the other tenants; ``/sys`` read-only (CUDA and NCCL read the PCI
topology there); a new ``/proc`` of its own PID namespace; a minimal ``/dev`` plus only *its*
GPUs' device files; private ``/tmp``, ``/var/tmp`` and ``/dev/shm``; its working directory,
its project's shared space and its home read-write, at the same paths as on the host. Not
there: ``/var`` (databases, spools, ``/var/lib`` of every service), ``/run`` (munge and
database sockets), ``/root``, ``/home``, ``/srv``, ``/opt``, the server's state directory and
virtualenv, other jobs' directories.

**Why the network is shared** (unless `SandboxPolicy.share_network` is false): jobs fetch data
and models. So services on 127.0.0.1 are reachable and must authenticate: a database with a
``trust`` rule for 127.0.0.1 is open to every job (firewall them by uid, or unshare).

**Why no ``--die-with-parent``**: the local dispatcher re-adopts running jobs after a server
restart; a job tied to the server's life would die with every upgrade. Jobs end through
`kill_sandbox` (`status`), which ends the whole PID namespace.

**Paths cannot be steered**: the read-write directories are opened by the server component by
component without following symlinks (`safe_files.open_dir_beneath`) and handed to bwrap as
descriptors (``--bind-fd``); bwrap's options, the job's environment included, go through a
descriptor (``--args``) so that secrets in it never appear in any process's command line.

**Without bubblewrap** (`status.sandbox_problem` says why): a multi-tenant site starts no jobs
(`mode.decide_mode`); a single-user site runs them unsandboxed as the server's user, saying so.
"""

from __future__ import annotations

import contextlib
import enum
import glob
import os
import pwd
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpucenter.dispatch.isolation.identity import RunAs
from gpucenter.dispatch.isolation.safe_files import UnsafeFile, open_dir_beneath

__all__ = [
    "CLEAN_PATH",
    "DEFAULT_ETC_MASKS",
    "PreparedSandbox",
    "SandboxError",
    "SandboxJob",
    "SandboxPolicy",
    "Step",
    "StepKind",
    "job_environment",
    "prepare_sandbox",
    "sandbox_layout",
    "shell_command",
    "start_sandboxed",
]

CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"

DEFAULT_ETC_MASKS: tuple[str, ...] = (
    *("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-", "/etc/security/opasswd"),
    *("/etc/sudoers", "/etc/sudoers.d", "/etc/ssh/ssh_host_*_key", "/etc/ssl/private"),
    *("/etc/munge", "/etc/slurm/slurmdbd.conf", "/etc/slurm/*.key", "/etc/slurm-llnl/*.key"),
    *("/etc/slurm-llnl/slurmdbd.conf", "/etc/krb5.keytab", "/etc/gpucenter"),
    *("/etc/mysql/debian.cnf", "/etc/postgresql", "/etc/letsencrypt", "/etc/pki/tls/private"),
)
"""What in /etc a job must not read even where its mode allows (a mistaken 0644 included)."""

_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_NEVER_BOUND = ("/proc", "/dev", "/sys", "/etc", "/run", "/var/run", "/tmp", "/var/tmp")
# Other services' state and other people's homes: a job directory never lies in or holds them.
_SENSITIVE = ("/var/lib", "/var/spool", "/var/log", "/var/cache", "/var/mail", "/root", "/boot")
_RESERVED_PREFIX = "GPUCENTER_"  # the server's settings; the dispatcher sets the job's own
_DISPATCHER_VARS = frozenset(
    {"CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"}
    | {"ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL"}
    | {"HOME", "USER", "LOGNAME"}
)
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SandboxError(Exception):
    """The sandbox cannot be built for this job (a bad path, a missing device...); the job
    fails with this reason rather than run with less isolation."""


@dataclass(frozen=True, slots=True)
class SandboxPolicy:
    """The site's sandbox settings: the same for every job."""

    bwrap: str = "/usr/bin/bwrap"
    setpriv: str = "/usr/bin/setpriv"
    share_network: bool = True
    extra_ro_paths: tuple[str, ...] = ()
    """More host directories visible read-only (a /opt software tree, /usr is already in)."""
    etc_masks: tuple[str, ...] = DEFAULT_ETC_MASKS
    hidden_paths: tuple[str, ...] = ()
    """The server's state, configuration and secrets: masked where they lie inside a visible
    tree, and no job directory may contain them."""
    tenant_ids: range | None = None
    """The provisioned uid/gid range: other tenants' accounts are left out of /etc/passwd and
    /etc/group as the job sees them. None: the files as they are."""
    bind_sys: bool = True
    device_dir: str = "/dev"
    """Where GPU device files are taken from (tests point it at stand-ins)."""
    gpu_shared_devices: tuple[str, ...] = (
        *("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"),
    )
    tmp_size_bytes: int | None = None
    """Size cap of the job's private /tmp and /var/tmp (memory-backed); None: tmpfs default."""
    hostname: str | None = None  # None: the machine's, which MPI and NCCL expect
    path: str = CLEAN_PATH


@dataclass(frozen=True, slots=True)
class SandboxJob:
    """One job's sandbox: what to run, as whom, with which directories and GPUs."""

    job_id: int
    argv: tuple[str, ...]
    workdir: Path
    run_as: RunAs | None
    """None: stay the server's own user (single-user mode only)."""
    project_dir: Path | None = None
    gpu_minors: tuple[int, ...] = ()
    """Device minor numbers (``/dev/nvidia<minor>``): NVML's nvmlDeviceGetMinorNumber, which
    need not equal the GPU's index."""
    env: Mapping[str, str] = field(default_factory=dict)
    """The job's own variables, as submitted."""
    job_vars: Mapping[str, str] = field(default_factory=dict)
    """Set by the dispatcher, last: GPUCENTER_JOB_ID, GPUCENTER_NODES, CUDA_VISIBLE_DEVICES."""
    trusted_root: Path = Path("/")
    """Directories below it are opened without following symlinks (the output root)."""
    shared_runs: Path | None = None
    """The run directories' root, visible read-only, where the job's project shares its
    outputs (issue 17): the job then reads its co-members' runs, which are group-readable by
    the project's group; anybody else's stay closed by their modes (0700, or another
    project's group). None: no other run is there."""


def shell_command(command: str) -> tuple[str, ...]:
    """The argv that runs a submitted command line."""
    return ("/bin/bash", "-c", command)


class StepKind(enum.Enum):
    RO_BIND = "ro-bind"
    SYMLINK = "symlink"
    MASK_FILE = "mask-file"
    MASK_DIR = "mask-dir"
    DATA_FILE = "data-file"
    PROC = "proc"
    DEV = "dev"
    TMPFS = "tmpfs"
    DIR = "dir"
    RW_BIND = "rw-bind"
    DEV_BIND = "dev-bind"


@dataclass(frozen=True, slots=True)
class Step:
    """One element of the sandbox's file system, in the order bwrap builds it."""

    kind: StepKind
    dest: str
    src: str = ""
    mode: int | None = None
    size: int | None = None
    data: bytes = b""


def _within(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def _check_job_path(label: str, path: Path, policy: SandboxPolicy) -> str:
    text = str(path)
    if "\0" in text or not path.is_absolute() or os.path.normpath(text) != text:
        raise SandboxError(f"{label} {text!r} must be an absolute, normalised path")
    for tree in (*_SYSTEM, *_NEVER_BOUND, *_SENSITIVE, *policy.extra_ro_paths):
        if _within(text, tree) and not text.startswith(("/tmp/", "/var/tmp/")):
            raise SandboxError(f"{label} {text} lies in {tree}, which jobs never get writable")
    for tree in (*_SYSTEM, *_NEVER_BOUND, *_SENSITIVE, "/home"):
        if _within(tree, text):
            raise SandboxError(f"{label} {text} contains {tree}, which jobs never get writable")
    for hidden in policy.hidden_paths:
        if _within(hidden, text):
            raise SandboxError(f"{label} {text} contains {hidden}, which jobs must not see")
    return text


def _without_tenants(text: str, ids: range, keep: set[int], gone: set[str]) -> bytes:
    """`text` (passwd or group format: the id is field 3) without the lines of tenant ids
    other than `keep`, and without the names in `gone` in member lists (field 4)."""
    kept = []
    for line in text.splitlines():
        fields = line.split(":")
        try:
            number = int(fields[2])
        except (IndexError, ValueError):
            kept.append(line)
            continue
        if number in ids and number not in keep:
            continue
        if len(fields) == 4 and gone:
            fields[3] = ",".join(m for m in fields[3].split(",") if m and m not in gone)
        kept.append(":".join(fields))
    return ("\n".join(kept) + "\n").encode()


def _tenant_files(job: SandboxJob, ids: range) -> list[Step]:
    """/etc/passwd and /etc/group as the job sees them: no other tenant in them."""
    own = job.run_as
    with open("/etc/passwd", encoding="utf-8", errors="replace") as file:
        passwd = file.read()
    with open("/etc/group", encoding="utf-8", errors="replace") as file:
        group = file.read()
    gone = {
        f[0]
        for f in (line.split(":") for line in passwd.splitlines())
        if len(f) > 2 and f[2].isdigit() and int(f[2]) in ids and (own is None or f[0] != own.name)
    }
    uids = {own.uid} if own else set()
    gids = {own.gid, *own.groups} if own else set()
    return [
        Step(
            StepKind.DATA_FILE,
            "/etc/passwd",
            mode=0o644,
            data=_without_tenants(passwd, ids, uids, set()),
        ),
        Step(
            StepKind.DATA_FILE,
            "/etc/group",
            mode=0o644,
            data=_without_tenants(group, ids, gids, gone),
        ),
    ]


def sandbox_layout(job: SandboxJob, policy: SandboxPolicy) -> tuple[Step, ...]:
    """The sandbox's file system for `job`, step by step (reads the host; starts nothing)."""
    steps: list[Step] = []
    made = {"/"}
    visible: list[str] = []

    def parents(dest: str) -> None:
        ancestors = [str(p) for p in reversed(Path(dest).parents)]
        for ancestor in ancestors:
            if ancestor in made or any(_within(ancestor, tree) for tree in visible):
                continue
            steps.append(Step(StepKind.DIR, ancestor, mode=0o755))
            made.add(ancestor)

    for tree in _SYSTEM:
        if os.path.islink(tree):
            steps.append(Step(StepKind.SYMLINK, tree, src=os.readlink(tree)))
        elif os.path.isdir(tree):
            steps.append(Step(StepKind.RO_BIND, tree, src=tree))
            visible.append(tree)
    steps.append(Step(StepKind.RO_BIND, "/etc", src="/etc"))
    visible.append("/etc")
    if policy.bind_sys and os.path.isdir("/sys"):
        steps.append(Step(StepKind.RO_BIND, "/sys", src="/sys"))
        visible.append("/sys")
    resolv = "/etc/resolv.conf"
    if os.path.islink(resolv):  # often into /run, which the job does not get
        target = os.path.realpath(resolv)
        if os.path.isfile(target) and not any(_within(target, t) for t in visible):
            parents(target)
            steps.append(Step(StepKind.RO_BIND, target, src=target))
    steps += [
        Step(StepKind.PROC, "/proc"),
        Step(StepKind.DEV, "/dev"),
        Step(StepKind.TMPFS, "/dev/shm", mode=0o1777, size=policy.tmp_size_bytes),
        Step(StepKind.TMPFS, "/tmp", mode=0o1777, size=policy.tmp_size_bytes),
        Step(StepKind.DIR, "/var", mode=0o755),
        Step(StepKind.TMPFS, "/var/tmp", mode=0o1777, size=policy.tmp_size_bytes),
    ]
    made.update({"/proc", "/dev", "/dev/shm", "/tmp", "/var", "/var/tmp"})
    for tree in policy.extra_ro_paths:  # after the private /tmp, which would cover them
        text = os.path.normpath(tree)
        if text != tree or not os.path.isabs(tree) or text == "/" or not os.path.isdir(tree):
            raise SandboxError(f"extra read-only path {tree!r}: an existing absolute directory")
        parents(tree)
        steps.append(Step(StepKind.RO_BIND, tree, src=tree))
        visible.append(tree)
    masked: set[str] = set()
    for pattern in (*policy.etc_masks, *policy.hidden_paths):
        for found in sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]:
            real = os.path.realpath(found)
            if real in masked or not any(_within(real, t) for t in visible):
                continue  # not there, or outside every visible tree: invisible anyway
            if os.path.isdir(real):
                steps.append(Step(StepKind.MASK_DIR, real, mode=0o000))
            elif os.path.lexists(real):
                steps.append(Step(StepKind.MASK_FILE, real, mode=0o000))
            else:
                continue
            masked.add(real)
    if policy.tenant_ids is not None:
        steps += _tenant_files(job, policy.tenant_ids)
    binds = {_check_job_path("working directory", job.workdir, policy)}
    if job.project_dir is not None:
        binds.add(_check_job_path("project directory", job.project_dir, policy))
    if job.run_as is not None and job.run_as.home is not None and job.run_as.home.is_dir():
        binds.add(_check_job_path("home directory", job.run_as.home, policy))
    if job.shared_runs is not None:  # before the job's own run directory, nested in it
        shared = _check_job_path("shared run directories", job.shared_runs, policy)
        parents(shared)
        steps.append(Step(StepKind.RO_BIND, shared, src=shared))
        made.add(shared)
    for path in sorted(binds, key=lambda p: (p.count("/"), p)):  # outer before nested
        parents(path)
        steps.append(Step(StepKind.RW_BIND, path, src=path))
        made.add(path)
    if job.gpu_minors:
        names = [f"nvidia{minor}" for minor in sorted(set(job.gpu_minors))]
        for name in names:
            if not _is_char_device(os.path.join(policy.device_dir, name)):
                raise SandboxError(f"GPU device {policy.device_dir}/{name} is missing")
        names += [
            n for n in policy.gpu_shared_devices if os.path.exists(f"{policy.device_dir}/{n}")
        ]
        for name in names:
            steps.append(Step(StepKind.DEV_BIND, f"/dev/{name}", src=f"{policy.device_dir}/{name}"))
    return tuple(steps)


def _is_char_device(path: str) -> bool:
    try:
        return os.stat(path).st_mode & 0o170000 == 0o020000
    except OSError:
        return False


def job_environment(job: SandboxJob, policy: SandboxPolicy) -> dict[str, str]:
    """The job's whole environment, built fresh: nothing of the server's is inherited.

    ``HOME`` is the owner's home where the site gives one, else the working directory;
    ``PATH`` the clean system one (a job may set its own). The job's variables come next,
    except the ones the dispatcher owns (``GPUCENTER_*``, GPU selection, identity); the
    dispatcher's `SandboxJob.job_vars` last. A NUL byte or a malformed name is refused.
    """
    run_as = job.run_as
    if run_as is not None:
        user, home = run_as.name, str(run_as.home or job.workdir)
    else:
        try:
            user = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            user = str(os.geteuid())
        home = str(job.workdir)
    env = {
        "PATH": policy.path,
        "HOME": home,
        "USER": user,
        "LOGNAME": user,
        "SHELL": "/bin/bash",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
    }
    for name, value in job.env.items():
        _check_variable(name, value)
        if name.startswith(_RESERVED_PREFIX) or name in _DISPATCHER_VARS:
            continue
        env[name] = value
    for name, value in job.job_vars.items():
        _check_variable(name, value)
        env[name] = value
    return env


def _check_variable(name: str, value: str) -> None:
    if not _VAR_NAME.fullmatch(name):
        raise SandboxError(f"environment variable name {name!r} is not valid")
    if "\0" in value:
        raise SandboxError(f"environment variable {name} contains a NUL byte")


@dataclass(slots=True)
class PreparedSandbox:
    """The outer command and the descriptors it needs; keep it open until the process runs.

    Start it with `start_sandboxed` (or ``Popen(argv, env=env, pass_fds=pass_fds,
    start_new_session=True)``), then `close` it: the server's copies of the descriptors are
    not needed once bwrap has them.
    """

    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...]
    steps: tuple[Step, ...]

    def close(self) -> None:
        for fd in self.pass_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pass_fds = ()

    def __enter__(self) -> PreparedSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name)  # close-on-exec: only bwrap gets it, through pass_fds
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def prepare_sandbox(
    job: SandboxJob,
    policy: SandboxPolicy,
    *,
    status_path: Path | None = None,
) -> PreparedSandbox:
    """Build the bwrap command for `job`; raises `SandboxError` when it cannot be safe.

    `status_path`: a file in a directory only the server can write, where bwrap records the
    sandbox's PID-namespace init and, when the job ends, its exit code (JSON lines, read by
    `status.read_sandbox_status`); the job cannot reach it, so it cannot forge its status.
    """
    euid = os.geteuid()
    if job.run_as is not None and euid != 0:
        raise SandboxError("switching to the job owner's identity needs root")
    if not job.argv:
        raise SandboxError("nothing to run")
    steps = sandbox_layout(job, policy)
    env = job_environment(job, policy)
    fds: list[int] = []
    try:
        options = _options(job, policy, steps, env, fds, euid)
        if status_path is not None:
            fds.append(_open_status(status_path))
            options += ["--json-status-fd", str(fds[-1])]
        fds.append(_memfd("bwrap-args", b"".join(o.encode() + b"\0" for o in options)))
        argv = [policy.bwrap, "--args", str(fds[-1]), "--", *_inner(job, policy)]
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    outer_env = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "GPUCENTER_JOB_ID": str(job.job_id)}
    return PreparedSandbox(argv, outer_env, tuple(fds), steps)


def _open_status(path: Path) -> int:
    dfd = open_dir_beneath(path.parent, root=path.parent)
    try:
        st = os.fstat(dfd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise SandboxError(f"{path.parent} must be the server's and writable by nobody else")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK
        return os.open(path.name, flags, 0o600, dir_fd=dfd)
    finally:
        os.close(dfd)


def _options(
    job: SandboxJob,
    policy: SandboxPolicy,
    steps: Sequence[Step],
    env: Mapping[str, str],
    fds: list[int],
    euid: int,
) -> list[str]:
    options = ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not policy.share_network:
        options.append("--unshare-net")
    options += ["--hostname", policy.hostname or os.uname().nodename]
    if euid == 0 and job.run_as is None:
        options += ["--cap-drop", "ALL"]  # single-user as root: root, but without privileges
    for step in steps:
        options += _step_options(step, job, fds, euid)
    options.append("--clearenv")
    for name, value in env.items():
        options += ["--setenv", name, value]
    options += ["--chdir", str(job.workdir)]
    return options


def _step_options(step: Step, job: SandboxJob, fds: list[int], euid: int) -> list[str]:
    kind, dest = step.kind, step.dest
    perms = [] if step.mode is None else ["--perms", f"{step.mode:04o}"]
    if kind is StepKind.RO_BIND:
        return ["--ro-bind", step.src, dest]
    if kind is StepKind.SYMLINK:
        return ["--symlink", step.src, dest]
    if kind is StepKind.MASK_FILE:
        fds.append(_memfd("masked", b""))
        return [*perms, "--ro-bind-data", str(fds[-1]), dest]
    if kind is StepKind.DATA_FILE:
        fds.append(_memfd("data", step.data))
        return [*perms, "--ro-bind-data", str(fds[-1]), dest]
    if kind in (StepKind.MASK_DIR, StepKind.TMPFS):
        size = [] if step.size is None else ["--size", str(step.size)]
        return [*size, *perms, "--tmpfs", dest]
    if kind is StepKind.PROC:
        return ["--proc", dest]
    if kind is StepKind.DEV:
        return ["--dev", dest]
    if kind is StepKind.DIR:
        return [*perms, "--dir", dest]
    if kind is StepKind.DEV_BIND:
        return ["--dev-bind", step.src, dest]
    # RW_BIND: opened here without following symlinks below the trusted root, passed by fd.
    try:
        fd = open_dir_beneath(Path(step.src), root=job.trusted_root)
    except (UnsafeFile, OSError) as exc:
        raise SandboxError(f"cannot use {step.src} for job {job.job_id}: {exc}") from exc
    fds.append(fd)
    owner = os.fstat(fd).st_uid
    allowed = {0, euid} | ({job.run_as.uid} if job.run_as else set())
    if owner not in allowed:
        raise SandboxError(f"{step.src} belongs to uid {owner}, not the job's owner or root")
    return ["--bind-fd", str(fd), dest]


def _inner(job: SandboxJob, policy: SandboxPolicy) -> list[str]:
    if job.run_as is None:
        return list(job.argv)
    run_as = job.run_as
    groups = ",".join(str(g) for g in run_as.groups)
    return [
        policy.setpriv,
        f"--reuid={run_as.uid}",
        f"--regid={run_as.gid}",
        f"--groups={groups}" if groups else "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
        *job.argv,
    ]


CLAIM_EXIT = 75
"""The exit status of a start that found its run claimed by another process."""
_CLAIM_THEN_EXEC = (
    f'{{ set -C; printf "%s" "$$" > "$1"; }} 2>/dev/null || exit {CLAIM_EXIT}; shift; exec "$@"'
)


def start_sandboxed(
    prepared: PreparedSandbox,
    *,
    stdout: int,
    stderr: int,
    claim: Path | None = None,
    umask: int = 0o077,
) -> subprocess.Popen[bytes]:
    """Start the sandbox in a session of its own (the dispatcher signals its group), stdin
    from /dev/null; only the sandbox's own descriptors are inherited.

    With `claim`, the started process first creates that file (noclobber) with its pid and
    then becomes bubblewrap (exec: same pid); if another process created it first, it exits
    with CLAIM_EXIT and runs nothing. The run is claimed by the process that would run it,
    so a server paused between its checks and the fork cannot start a run twice."""
    argv = list(prepared.argv)
    if claim is not None:
        argv = ["/bin/sh", "-c", _CLAIM_THEN_EXEC, "sh", str(claim), *argv]
    return subprocess.Popen(
        argv,
        env=prepared.env,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        pass_fds=prepared.pass_fds,
        start_new_session=True,
        umask=umask,  # inherited through bubblewrap and setpriv by the job (its files' modes)
    )
