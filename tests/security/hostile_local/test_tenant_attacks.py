"""Tenant B's job attacks tenant A and the server on a local multi-tenant site; all of it fails.

Real: root, provisioned accounts, bubblewrap, setpriv. Tenant A runs a job (it writes output,
then sleeps); the test process stands in for the server (its environment holds a secret, its
state directory a database that is deliberately world-readable, so that the sandbox and not
file modes is what is tested). Tenant B's job is a Python probe that tries every attack in
the issue and reports each outcome as JSON; positive controls (its own work directory,
project space and GPU) prove the probe itself works. Afterwards A's files, process and GPU are
exactly as before.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpucenter.dispatch.isolation import (
    SandboxJob,
    SandboxPolicy,
    SandboxStatus,
    kill_sandbox,
    make_owned_dir,
    prepare_job_output,
    prepare_sandbox,
    read_sandbox_status,
    read_tail,
    shell_command,
    start_sandboxed,
)
from tests.security.hostile_local.conftest import (
    Tenant,
    TwoTenants,
    make_fake_gpus,
    require,
)

# The probe runs on a Python the sandbox shows (under /usr); the server's venv is not there.
PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
SERVER_SECRET = "server-secret-" + os.urandom(8).hex()

PROBE = r"""
import json, os, signal, sys
t = json.loads(sys.argv[1])
out = {}
def attempt(name, fn):
    try:
        value = fn()
        out[name] = {"ok": True, "value": value}
    except OSError as exc:
        out[name] = {"ok": False, "errno": exc.errno, "error": str(exc)}
def read(path):
    with open(path, "rb") as f:
        return f.read(4096).decode("latin-1")
def append(path):
    with open(path, "ab") as f:
        f.write(b"pwned by B")
    return "written"
def create(path):
    with open(path, "xb") as f:
        f.write(b"pwned by B")
    return "created"
def processes():
    rows = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode("latin-1")
                rows.append([int(entry), os.stat(f"/proc/{entry}").st_uid, cmd[:120]])
            except OSError as exc:
                rows.append([int(entry), -1, str(exc)])
    return rows
def gpu(path):
    os.close(os.open(path, os.O_RDWR))
    return "opened"
for name, path in t["read"].items():
    attempt("read " + name, lambda p=path: read(p))
for name, path in t["write"].items():
    attempt("write " + name, lambda p=path: append(p))
for name, path in t["create"].items():
    attempt("create " + name, lambda p=path: create(p))
for name, path in t["list"].items():
    attempt("list " + name, lambda p=path: sorted(os.listdir(p)))
attempt("kill A", lambda: os.kill(t["a_pid"], signal.SIGKILL))
attempt("kill A's sandbox", lambda: os.kill(t["a_init"], signal.SIGKILL))
attempt("kill everyone", lambda: os.kill(-1, signal.SIGKILL))
attempt("server environ", lambda: read(f"/proc/{t['server_pid']}/environ"))
attempt("server cmdline", lambda: read(f"/proc/{t['server_pid']}/cmdline"))
attempt("sandbox init environ", lambda: read("/proc/1/environ"))
attempt("processes", processes)
attempt("other GPU", lambda: gpu("/dev/nvidia0"))
attempt("own GPU", lambda: gpu("/dev/nvidia1"))
attempt("dev", lambda: sorted(os.listdir("/dev")))
attempt("root", lambda: sorted(os.listdir("/")))
attempt("passwd", lambda: read("/etc/passwd"))
attempt("become root", lambda: os.setuid(0))
with open("/proc/self/status") as f:
    out["status"] = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
out["ids"] = [os.getuid(), os.geteuid(), os.getgid(), sorted(os.getgroups())]
out["env"] = dict(os.environ)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Site:
    root: Path
    state: Path
    policy: SandboxPolicy
    tenants: TwoTenants
    a_token: Path
    a_output: Path
    a_workdir: Path
    a_shared: Path
    b_workdir: Path
    b_project: Path


def _project_dir(parent: Path, tenant: Tenant) -> Path:
    path = parent / tenant.project.name
    path.mkdir(mode=0o770)
    os.chown(path, 0, tenant.run_as.groups[0])
    os.chmod(path, 0o2770)  # setgid: files made there stay the project's
    return path


def _file(path: Path, text: str, uid: int, gid: int, mode: int) -> Path:
    path.write_text(text)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def _fingerprint(paths: list[Path]) -> dict[str, tuple[str, int, int, int]]:
    result = {}
    for path in paths:
        st = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        result[str(path)] = (digest, st.st_uid, st.st_gid, st.st_mode)
    return result


def _spawn(site: Site, tenant: Tenant, job_id: int, command: tuple[str, ...], gpu: int) -> Any:
    workdir = make_owned_dir(
        site.root / "work", f"job-{job_id}", uid=tenant.run_as.uid, gid=tenant.run_as.gid
    )
    output = prepare_job_output(
        site.root / "outputs", f"job-{job_id}", uid=tenant.run_as.uid, gid=tenant.run_as.gid
    )
    job = SandboxJob(
        job_id,
        command,
        workdir,
        tenant.run_as,
        project_dir=site.root / "projects" / tenant.project.name,
        gpu_minors=(gpu,),
        job_vars={"GPUCENTER_JOB_ID": str(job_id), "CUDA_VISIBLE_DEVICES": "0"},
    )
    status = site.state / "spool" / f"job-{job_id}.status"
    with prepare_sandbox(job, site.policy, status_path=status) as prepared:
        process = start_sandboxed(
            prepared, stdout=output.files["stdout"], stderr=output.files["stderr"]
        )
    output.close()
    return process, output.path, status, workdir


@pytest.fixture(scope="module")
def site(two_tenants: TwoTenants, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("site")
    os.chmod(root, 0o755)
    state = root / "state"
    state.mkdir(mode=0o700)
    (state / "spool").mkdir(mode=0o700)
    # What the issue found readable: a 0644 database, config with a secret, an admin token.
    _file(state / "gpucenter.db", "users: admin is_admin=1", 0, 0, 0o644)
    _file(state / "config.env", f"GPUCENTER_SECRET_KEY={SERVER_SECRET}", 0, 0, 0o644)
    for sub in ("work", "outputs", "projects"):
        (root / sub).mkdir(mode=0o755)
    a, b = two_tenants.a, two_tenants.b
    token_dir = a.run_as.home / ".gpucenter" if a.run_as.home else root
    token_dir.mkdir(mode=0o700)
    os.chown(token_dir, a.run_as.uid, a.run_as.gid)
    a_token = _file(token_dir / "token", "gpc_A_CLI_TOKEN", a.run_as.uid, a.run_as.gid, 0o600)
    a_project = _project_dir(root / "projects", a)
    a_shared = _file(a_project / "shared.txt", "A's data", a.run_as.uid, a.run_as.groups[0], 0o660)
    b_project = _project_dir(root / "projects", b)
    # A software tree the site shows read-only, holding a world-readable secret it hides.
    (root / "software").mkdir(mode=0o755)
    _file(root / "software" / "tool", "a tool", 0, 0, 0o755)
    _file(root / "software" / "licence.key", "LICENCE-SECRET", 0, 0, 0o644)
    policy = SandboxPolicy(
        device_dir=str(make_fake_gpus(root / "dev", 2)),
        extra_ro_paths=(str(root / "software"),),
        hidden_paths=(str(state), str(root / "software" / "licence.key")),
        tenant_ids=range(two_tenants.policy.uid_min, two_tenants.policy.uid_max + 1),
    )
    site = Site(
        root, state, policy, two_tenants, a_token, root / "outputs" / "job-1" / "stdout",
        root / "work" / "job-1", a_shared, root / "work" / "job-2", b_project,
    )  # fmt: skip
    old_env = os.environ.get("GPUCENTER_SECRET_KEY")
    os.environ["GPUCENTER_SECRET_KEY"] = SERVER_SECRET  # the server's own, never the job's
    try:
        yield site
    finally:
        if old_env is None:
            os.environ.pop("GPUCENTER_SECRET_KEY", None)
        else:
            os.environ["GPUCENTER_SECRET_KEY"] = old_env


def _uid_processes(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid and "Z" not in _state(entry):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _state(entry: Path) -> str:
    text = (entry / "stat").read_text()
    return text[text.rfind(")") + 2 :].split()[0]


def _wait_for(predicate: Any, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Attack:
    results: dict[str, Any]
    before: dict[str, tuple[str, int, int, int]]
    after: dict[str, tuple[str, int, int, int]]
    a_pid: int
    a_alive_after: bool
    b_stderr: str


@pytest.fixture(scope="module")
def attack(site: Site) -> Iterator[Attack]:
    """Run A's job, then B's probe against it; collect what B got and what A still has."""
    a, b = site.tenants.a, site.tenants.b
    a_cmd = shell_command("echo A-SECRET-OUTPUT; echo A-WORK > result.txt; exec sleep 300")
    a_proc, _a_out, a_status_path, a_workdir = _spawn(site, a, 1, a_cmd, gpu=0)
    a_status: SandboxStatus | None = None
    try:
        _wait_for(lambda: (a_workdir / "result.txt").exists(), "A's job to write its result")
        a_status = read_sandbox_status(a_status_path)
        assert a_status is not None
        a_pids = _uid_processes(a.run_as.uid)
        assert len(a_pids) == 1, a_pids
        watched = [site.a_token, site.a_output, site.a_shared, a_workdir / "result.txt"]
        watched += [site.state / "gpucenter.db", site.state / "config.env", a_status_path]
        before = _fingerprint(watched)
        targets = {
            "read": {
                "A's token": str(site.a_token),
                "A's output": str(site.a_output),
                "A's result": str(a_workdir / "result.txt"),
                "A's project file": str(site.a_shared),
                "database": str(site.state / "gpucenter.db"),
                "server config": str(site.state / "config.env"),
                "A's sandbox status": str(a_status_path),
                "shadow": "/etc/shadow",
                "gshadow": "/etc/gshadow",
                "munge key": "/etc/munge/munge.key",
                "slurmdbd.conf": "/etc/slurm/slurmdbd.conf",
                "root's home": "/root/.bashrc",
                "hidden licence": str(site.root / "software" / "licence.key"),
                "visible tool": str(site.root / "software" / "tool"),
            },
            "write": {
                "database": str(site.state / "gpucenter.db"),
                "A's output": str(site.a_output),
                "A's project file": str(site.a_shared),
                "A's token": str(site.a_token),
            },
            "create": {
                "in state dir": str(site.state / "planted"),
                "in A's workdir": str(a_workdir / "planted"),
                "in A's output dir": str(site.a_output.parent / "planted"),
                "in /usr": "/usr/bin/gpucenter-planted",
                "in /etc": "/etc/gpucenter-planted",
                "own workdir": str(site.b_workdir / "probe.txt"),
                "own project": str(site.b_project / "probe.txt"),
            },
            "list": {
                "state dir": str(site.state),
                "A's workdir": str(a_workdir),
                "outputs": str(site.root / "outputs"),
                "work": str(site.root / "work"),
                "home": "/home",
                "var/lib": "/var/lib",
                "run": "/run",
            },
            "a_pid": a_pids[0],
            "a_init": a_status.child_pid,
            "server_pid": os.getpid(),
        }
        if PYTHON is None:
            require("the probe needs python3 under /usr (apt-get install python3)")
        b_cmd = (str(PYTHON), "-c", PROBE, json.dumps(targets))
        b_proc, b_out, _b_status, _ = _spawn(site, b, 2, b_cmd, gpu=1)
        code = b_proc.wait(timeout=60)
        stdout = read_tail(b_out / "stdout", expected_uid=b.run_as.uid).data.decode()
        stderr = read_tail(b_out / "stderr", expected_uid=b.run_as.uid).data.decode()
        assert code == 0, f"the probe failed (exit {code}): {stderr}"
        results = json.loads(stdout.strip().splitlines()[-1])
        time.sleep(0.2)  # give a successful kill time to show
        after = _fingerprint(watched)
        alive = a_pids[0] in _uid_processes(a.run_as.uid)
        yield Attack(results, before, after, a_pids[0], alive, stderr)
    finally:
        if a_status is not None:
            kill_sandbox(a_status)
        os.killpg(a_proc.pid, signal.SIGKILL)
        a_proc.wait(timeout=10)


pytestmark = pytest.mark.usefixtures("as_root_with_bwrap")

ATTACKS = [
    "read A's token",
    "read A's output",
    "read A's result",
    "read A's project file",
    "read database",
    "read server config",
    "read A's sandbox status",
    "read shadow",
    "read gshadow",
    "read munge key",
    "read slurmdbd.conf",
    "read root's home",
    "read hidden licence",
    "write database",
    "write A's output",
    "write A's project file",
    "write A's token",
    "create in state dir",
    "create in A's workdir",
    "create in A's output dir",
    "create in /usr",
    "create in /etc",
    "list state dir",
    "list A's workdir",
    "list outputs",
    "list home",
    "list var/lib",
    "list run",
    "kill A",
    "kill A's sandbox",
    "server environ",
    "server cmdline",
    "sandbox init environ",
    "other GPU",
    "become root",
]


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_fails(attack: Attack, name: str) -> None:
    outcome = attack.results[name]
    assert outcome["ok"] is False, f"{name} succeeded: {outcome}"


@pytest.mark.parametrize(
    "name", ["create own workdir", "create own project", "own GPU", "read visible tool"]
)
def test_the_probe_can_use_what_is_its_own(attack: Attack, name: str) -> None:
    """Positive controls: the attacks fail because of isolation, not a broken probe."""
    assert attack.results[name]["ok"] is True, attack.results[name]


def test_tenant_a_is_unchanged(attack: Attack) -> None:
    assert attack.after == attack.before
    assert attack.a_alive_after, "tenant A's job was killed"


def test_the_system_is_mounted_read_only(attack: Attack) -> None:
    """Read-only mounts, not only file modes: EROFS even where a mode would allow it."""
    for name in ("create in /usr", "create in /etc"):
        assert attack.results[name]["errno"] == errno.EROFS, attack.results[name]


def test_kill_everyone_reaches_nobody_else(attack: Attack) -> None:
    # kill(-1) signals every process the caller may signal: in its namespace, none but itself.
    assert attack.results["kill everyone"]["ok"] is False
    assert attack.a_alive_after


def test_the_job_sees_only_its_own_processes(attack: Attack) -> None:
    rows = attack.results["processes"]["value"]
    assert len(rows) <= 3, rows  # bwrap's reaper (PID 1), the probe, perhaps its shell
    assert all(pid < 10 for pid, _uid, _cmd in rows), rows
    assert not any("sleep 300" in cmd or "pytest" in cmd for _pid, _uid, cmd in rows), rows


def test_the_job_sees_only_its_own_gpu(attack: Attack) -> None:
    devices = set(attack.results["dev"]["value"])
    assert "nvidia1" in devices and "nvidiactl" in devices
    assert "nvidia0" not in devices


def test_nothing_of_the_host_is_visible_but_the_system(attack: Attack, site: Site) -> None:
    top = set(attack.results["root"]["value"])
    system = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "sys"}
    # The job's directories appear at their host paths, under the site root's first component.
    assert top <= system | {"proc", "dev", "tmp", "var", site.root.parts[1]}
    assert not {"root", "home", "srv", "opt", "run", "mnt", "boot"} - {site.root.parts[1]} & top


def test_the_job_runs_as_its_owner_without_privileges(attack: Attack, site: Site) -> None:
    b = site.tenants.b.run_as
    uid, euid, gid, groups = attack.results["ids"]
    assert (uid, euid, gid) == (b.uid, b.uid, b.gid)
    assert groups == sorted(b.groups)  # supplementary: the job's project group only
    status = attack.results["status"]
    assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"


def test_the_environment_is_the_owners_not_the_servers(attack: Attack, site: Site) -> None:
    env = attack.results["env"]
    b = site.tenants.b.run_as
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["HOME"] == str(b.home) and env["USER"] == b.name
    assert SERVER_SECRET not in json.dumps(env)
    assert not {k for k in env if k.startswith("GPUCENTER_")} - {"GPUCENTER_JOB_ID"}
    assert "VIRTUAL_ENV" not in env and ".venv" not in env["PATH"]


def test_other_tenants_are_not_in_passwd(attack: Attack, site: Site) -> None:
    passwd = attack.results["passwd"]["value"]
    assert site.tenants.b.run_as.name in passwd
    assert site.tenants.a.run_as.name not in passwd
