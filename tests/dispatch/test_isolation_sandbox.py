"""The sandbox's layout, environment and command, checked without running bubblewrap.

These read the host (which /etc files exist) but start nothing; tests that need root (device
nodes, another owner) say so. The real thing runs in tests/security/hostile_local.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from gpucenter.dispatch.isolation import (
    RunAs,
    SandboxError,
    SandboxJob,
    SandboxPolicy,
    SandboxStatus,
    device_minors,
    job_environment,
    prepare_sandbox,
    read_sandbox_status,
    sandbox_is_ours,
    shell_command,
)
from gpucenter.dispatch.isolation.sandbox import StepKind, _without_tenants, sandbox_layout
from tests.security.hostile_local.conftest import require

OWNER = RunAs("gpc-bob", 200_001, 200_001, (200_010,))


def _job(workdir: Path, **kwargs: object) -> SandboxJob:
    return SandboxJob(7, shell_command("true"), workdir, kwargs.pop("run_as", OWNER), **kwargs)  # type: ignore[arg-type]


def _root() -> None:
    if os.geteuid() != 0:
        require("needs root (device nodes, file owners)")


def test_only_system_trees_are_read_only_and_only_job_dirs_writable(tmp_path: Path) -> None:
    work, project, home = tmp_path / "w", tmp_path / "p", tmp_path / "h"
    for d in (work, project, home):
        d.mkdir()
    job = _job(work, project_dir=project, run_as=RunAs("gpc-bob", 200_001, 200_001, (), home))
    steps = sandbox_layout(job, SandboxPolicy())
    ro = {s.dest for s in steps if s.kind is StepKind.RO_BIND}
    assert ro - {"/usr", "/etc", "/sys", "/lib", "/lib64", "/bin", "/sbin", "/lib32"} <= {
        os.path.realpath("/etc/resolv.conf")
    }
    assert {s.dest for s in steps if s.kind is StepKind.RW_BIND} == {
        str(work),
        str(project),
        str(home),
    }
    dests = [s.dest for s in steps]
    for never in ("/root", "/home", "/run", "/var/lib", "/srv", "/opt", "/var/run"):
        assert not any(d == never or d.startswith(never + "/") for d in dests), never
    kinds = {s.dest: s.kind for s in steps}
    assert kinds["/proc"] is StepKind.PROC and kinds["/dev"] is StepKind.DEV
    assert kinds["/tmp"] is StepKind.TMPFS and kinds["/dev/shm"] is StepKind.TMPFS


def test_the_job_dirs_come_after_the_private_tmp(tmp_path: Path) -> None:
    """A workdir under the host's /tmp is bound into the private /tmp, so after it."""
    steps = [s.dest for s in sandbox_layout(_job(tmp_path), SandboxPolicy())]
    assert steps.index("/tmp") < steps.index(str(tmp_path))


@pytest.mark.parametrize(
    "path",
    [
        *("/", "/etc/x", "/usr/local/jobs", "/proc/1", "/dev/shm/x", "/tmp", "/sys/x"),
        *("/run/x", "/var", "/home", "/var/lib/gpucenter", "/var/spool/slurm", "/root/work"),
    ],
)
def test_dangerous_job_directories_are_refused(path: str) -> None:
    with pytest.raises(SandboxError):
        sandbox_layout(_job(Path(path)), SandboxPolicy())


@pytest.mark.parametrize("path", ["relative/dir", "/srv/a/../b"])
def test_job_directories_must_be_absolute_and_normalised(path: str) -> None:
    with pytest.raises(SandboxError, match="normalised"):
        sandbox_layout(_job(Path(path)), SandboxPolicy())


def test_a_job_directory_holding_server_state_is_refused(tmp_path: Path) -> None:
    policy = SandboxPolicy(hidden_paths=(str(tmp_path / "state"),))
    with pytest.raises(SandboxError, match="must not see"):
        sandbox_layout(_job(tmp_path), policy)
    (tmp_path / "state" / "jobs" / "job-7").mkdir(parents=True)
    sandbox_layout(_job(tmp_path / "state" / "jobs" / "job-7"), policy)  # only that subtree


def test_secrets_in_etc_are_masked(tmp_path: Path) -> None:
    policy = SandboxPolicy(hidden_paths=("/etc/hostname",))
    masks = {
        s.dest: s
        for s in sandbox_layout(_job(tmp_path), policy)
        if s.kind in (StepKind.MASK_FILE, StepKind.MASK_DIR)
    }
    assert "/etc/shadow" in masks and "/etc/hostname" in masks
    assert all(m.mode == 0 for m in masks.values())
    if os.path.isdir("/etc/ssl/private"):
        assert masks["/etc/ssl/private"].kind is StepKind.MASK_DIR


def test_other_tenants_are_dropped_from_passwd_and_group() -> None:
    ids = range(200_000, 300_000)
    passwd = (
        "root:x:0:0::/root:/bin/bash\ngpc-a:x:200000:200000::/x:/n\ngpc-b:x:200001:200001::/x:/n"
    )
    assert _without_tenants(passwd, ids, {200_001}, set()).decode().splitlines() == [
        "root:x:0:0::/root:/bin/bash",
        "gpc-b:x:200001:200001::/x:/n",
    ]
    group = "video:x:44:gpc-a,gpc-b\ngpcp-v:x:200010:gpc-a,gpc-b\ngpc-a:x:200000:"
    assert _without_tenants(group, ids, {200_010}, {"gpc-a"}).decode().splitlines() == [
        "video:x:44:gpc-b",
        "gpcp-v:x:200010:gpc-b",
    ]


def test_gpu_devices_are_only_the_jobs_own(tmp_path: Path) -> None:
    _root()
    devices = tmp_path / "dev"
    devices.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm"):
        os.mknod(devices / name, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (devices / "nvidia3").write_text("not a device")
    policy = SandboxPolicy(device_dir=str(devices))
    steps = sandbox_layout(_job(tmp_path, gpu_minors=(2, 0)), policy)
    bound = [s.dest for s in steps if s.kind is StepKind.DEV_BIND]
    assert bound == ["/dev/nvidia0", "/dev/nvidia2", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    assert not [s for s in sandbox_layout(_job(tmp_path), policy) if s.kind is StepKind.DEV_BIND]
    for missing in (3, 4):  # a regular file is no device; a missing one is an error, not "no GPU"
        with pytest.raises(SandboxError, match="missing"):
            sandbox_layout(_job(tmp_path, gpu_minors=(missing,)), policy)


def test_the_environment_is_built_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUCENTER_DATABASE_URL", "postgresql://secret")
    monkeypatch.setenv("VIRTUAL_ENV", "/srv/gpucenter/.venv")
    monkeypatch.setenv("PATH", "/srv/gpucenter/.venv/bin:/usr/bin")
    job = _job(
        tmp_path,
        env={"HF_TOKEN": "hf_x", "GPUCENTER_JOB_ID": "999", "CUDA_VISIBLE_DEVICES": "0,1,2,3"},
        job_vars={"GPUCENTER_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "1"},
    )
    env = job_environment(job, SandboxPolicy())
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["HOME"] == str(tmp_path) and env["USER"] == "gpc-bob"
    assert env["HF_TOKEN"] == "hf_x"
    assert env["GPUCENTER_JOB_ID"] == "7" and env["CUDA_VISIBLE_DEVICES"] == "1"
    assert "GPUCENTER_DATABASE_URL" not in env and "VIRTUAL_ENV" not in env
    home = RunAs("gpc-bob", 200_001, 200_001, (), Path("/home/gpc-bob"))
    assert job_environment(_job(tmp_path, run_as=home), SandboxPolicy())["HOME"] == "/home/gpc-bob"


@pytest.mark.parametrize(("name", "value"), [("A", "x\0y"), ("A=B", "x"), ("1A", "x"), ("", "x")])
def test_bad_variables_are_refused(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(SandboxError):
        job_environment(_job(tmp_path, env={name: value}), SandboxPolicy())


def test_a_job_never_runs_as_root() -> None:
    with pytest.raises(ValueError):
        RunAs("root", 0, 0)
    with pytest.raises(ValueError):
        RunAs("x", 200_000, 200_000, (0,))


def test_switching_users_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SandboxError, match="needs root"):
        prepare_sandbox(_job(tmp_path), SandboxPolicy())


def test_the_command_drops_to_the_owner_and_hides_options(tmp_path: Path) -> None:
    _root()
    job = _job(tmp_path, env={"HF_TOKEN": "hf_secret"})
    with prepare_sandbox(job, SandboxPolicy()) as prepared:
        argv = prepared.argv
        assert argv[:2] == ["/usr/bin/bwrap", "--args"] and int(argv[2]) in prepared.pass_fds
        assert "hf_secret" not in " ".join(argv) and "--setenv" not in argv
        inner = argv[argv.index("--") + 1 :]
        assert inner[:8] == [
            "/usr/bin/setpriv", "--reuid=200001", "--regid=200001", "--groups=200010",
            "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
        ]  # fmt: skip
        assert inner[8:] == ["/bin/bash", "-c", "true"]
        options = os.pread(int(argv[2]), 1 << 20, 0).split(b"\0")
        assert b"--die-with-parent" not in options  # jobs outlive a server restart
        assert b"--unshare-pid" in options and b"--unshare-net" not in options
        assert prepared.env == {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                                "GPUCENTER_JOB_ID": "7"}  # fmt: skip
    assert prepared.pass_fds == ()


def test_a_symlinked_job_directory_is_refused(tmp_path: Path) -> None:
    _root()
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(SandboxError, match="symlink"):
        prepare_sandbox(_job(tmp_path / "link" / "sub"), SandboxPolicy())
    (tmp_path / "real" / "sub").mkdir()
    with pytest.raises(SandboxError, match="symlink"):
        prepare_sandbox(_job(tmp_path / "link" / "sub"), SandboxPolicy())


def test_someone_elses_directory_is_refused(tmp_path: Path) -> None:
    _root()
    other = tmp_path / "other"
    other.mkdir()
    os.chown(other, 200_002, 200_002)
    with pytest.raises(SandboxError, match="belongs to uid 200002"):
        prepare_sandbox(_job(other), SandboxPolicy())


def test_the_status_file_must_be_in_a_private_directory(tmp_path: Path) -> None:
    _root()
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(SandboxError, match="writable by nobody else"):
        prepare_sandbox(_job(tmp_path), SandboxPolicy(), status_path=shared / "s.json")


def test_status_lines_are_parsed(tmp_path: Path) -> None:
    path = tmp_path / "status"
    path.write_text('{ "child-pid": 4242, "mnt-namespace": 1, "pid-namespace": 4026532175 }\n')
    assert read_sandbox_status(path) == SandboxStatus(4242, 4026532175, None)
    with path.open("a") as f:
        f.write('{ "exit-code": 137 }\n')
    assert read_sandbox_status(path) == SandboxStatus(4242, 4026532175, 137)
    path.write_text("garbage\n" + json.dumps({"child-pid": 1}))
    assert read_sandbox_status(path) is None  # pid 1 is never ours to signal
    assert read_sandbox_status(tmp_path / "absent") is None


def test_a_symlinked_status_file_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text('{"child-pid": 4242, "pid-namespace": 1}')
    (tmp_path / "status").symlink_to(tmp_path / "elsewhere")
    assert read_sandbox_status(tmp_path / "status") is None


def test_our_own_process_with_another_namespace_is_not_a_sandbox() -> None:
    ns = os.readlink(f"/proc/{os.getpid()}/ns/pid")
    mine = int(ns[ns.index("[") + 1 : -1])
    assert sandbox_is_ours(SandboxStatus(os.getpid(), mine))  # the check itself works
    assert not sandbox_is_ours(SandboxStatus(os.getpid(), mine + 1))
    assert not sandbox_is_ours(SandboxStatus(2**22 + 12345, mine))


def test_device_minors_come_from_the_driver(tmp_path: Path) -> None:
    gpus = tmp_path / "driver" / "nvidia" / "gpus"
    for bus, minor in (("0000:3B:00.0", 2), ("0000:86:00.0", 0)):
        (gpus / bus).mkdir(parents=True)
        (gpus / bus / "information").write_text(f"Model: H200\nDevice Minor: \t {minor}\n")
    assert device_minors(tmp_path) == {"0000:3b:00.0": 2, "0000:86:00.0": 0}
    assert device_minors(tmp_path / "none") == {}
