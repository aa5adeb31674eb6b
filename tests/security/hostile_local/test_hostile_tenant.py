"""Issue 17's acceptance on the local site: a hostile tenant against the REAL server path.

Nothing here is assembled by hand. The server is wired by `build_context` as ``gpucenter
serve`` wires it (``isolation=multi_tenant``, as root): its state directory made private, its
scheduler loop provisioning the tenants' Unix accounts from the database and launching
through the `LocalDispatcher` into bubblewrap. Two tenants of two organisations submit their
jobs through the REST API with their own tokens and read their logs back through it.

Tenant A's job writes output, a result, a file in its project space, then waits (holding GPU
0). Tenant B's job is a probe that tries everything the issue found possible: read A's CLI
token (0600, in A's home), A's outputs and results, the database, the key ring, the server's
configuration; write the database; signal A's processes; read the server's /proc entries;
open A's GPU device file. Each attempt must fail; positive controls (B's own directories and
GPU) prove the probe works; A sees nothing changed. Then B turns its own log into a symlink
to a root-only file and into a FIFO: the log API refuses both at once, and the server's note
at the end of a failed job does not write through a link. Finally the server restarts: A's
job is adopted only because `sandbox_is_ours` proves it, and can still be cancelled.

GPU device files are stand-ins (character devices 1:3, see conftest). Needs root and
bubblewrap: skipped with the reason elsewhere, failing instead with CI=true.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.dispatch.isolation import AccountPolicy, read_sandbox_status
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.db import migrate
from gpucenter.persistence.tables import JobRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import accounts
from gpucenter.services.wiring import build_context, ensure_site
from tests.security.hostile_local.conftest import (
    TEST_UID_BASE,
    make_fake_gpus,
    remove_test_accounts,
)

pytestmark = pytest.mark.usefixtures("as_root_with_bwrap")

SERVER_SECRET = "server-env-secret-" + secrets.token_hex(6)
CONFIG_SECRET = "config-file-secret-" + secrets.token_hex(6)
A_ENV_SECRET = "hf_A_" + secrets.token_hex(8)
SITE = "site: iso\nnodes:\n  - {name: n1, gpus: 3, gpu_type: vgpu, devices: true, block: b}\n"

A_COMMAND = (
    "echo A-SECRET-OUTPUT; echo A-WORK > result.txt; "
    'echo "A data" > "$GPUCENTER_PROJECT_DIR/shared.txt"; exec sleep 600'
)

PROBE = r"""
import json, os, signal, sys
t = json.loads(os.environ["TARGETS"])
out = {}
def attempt(name, fn):
    try:
        out[name] = {"ok": True, "value": fn()}
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
def gpu(path):
    os.close(os.open(path, os.O_RDWR))
    return "opened"
def pids():
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
for name, path in t["read"].items():
    attempt("read " + name, lambda p=path: read(p))
for name, path in t["write"].items():
    attempt("write " + name, lambda p=path: append(p))
for name, path in t["create"].items():
    path = path.replace("HOME", os.environ["HOME"])
    attempt("create " + name, lambda p=path: create(p))
for name, path in t["link"].items():
    attempt("hard-link " + name, lambda p=path, n=name: os.link(p, "linked-" + n.split()[-1]))
for name, path in t["list"].items():
    attempt("list " + name, lambda p=path: sorted(os.listdir(p)))
for name, pid in t["signal"].items():
    attempt("signal " + name, lambda p=pid: os.kill(p, signal.SIGKILL))
attempt("signal everyone", lambda: os.kill(-1, signal.SIGKILL))
for name, pid in t["proc"].items():
    attempt("server environ " + name, lambda p=pid: read(f"/proc/{p}/environ"))
    attempt("server cmdline " + name, lambda p=pid: read(f"/proc/{p}/cmdline"))
attempt("A's GPU", lambda: gpu(t["a_gpu"]))
attempt("own GPU", lambda: gpu("/dev/nvidia" + os.environ["CUDA_VISIBLE_DEVICES"]))
attempt("processes", pids)
attempt("passwd", lambda: read("/etc/passwd"))
attempt("become root", lambda: os.setuid(0))
out["ids"] = [os.getuid(), os.geteuid(), os.getgid(), sorted(os.getgroups())]
out["env"] = dict(os.environ)
# Last: B's own stderr becomes a link to a root-only file, for the log API to refuse.
os.unlink("stderr")
os.symlink(t["root_only"], "stderr")
print(json.dumps(out))
"""


@dataclass
class Server:
    settings: Settings
    ctx: AppContext
    client: TestClient
    policy: AccountPolicy
    tokens: dict[str, str]


def _settings(root: Path, policy: AccountPolicy, config: Path, devices: Path) -> Settings:
    var = root / "var"
    return Settings(
        var_dir=var,
        database_url=f"sqlite:///{var / 'gpucenter.db'}",
        site_file=root / "site.yaml",
        isolation="multi_tenant",
        isolation_uid_min=policy.uid_min,
        isolation_uid_max=policy.uid_max,
        isolation_user_prefix=policy.user_prefix,
        isolation_group_prefix=policy.group_prefix,
        tenant_dir=root / "tenants",
        isolation_hidden_paths=[str(config)],
        isolation_device_dir=devices,
        scheduler_interval_s=0.2,
        kill_grace_s=1.0,
        submit_fast_path=False,
        cookie_secure=False,
    )


def _seed(ctx: AppContext) -> dict[str, str]:
    now = datetime.now(tz=UTC)
    with ctx.sessions.begin() as s:
        accounts.create_organisation(s, "Alpha University", "university", now)
        accounts.create_organisation(s, "Beta Startup", "startup", now)
        admin = accounts.create_user(s, "root", now, is_admin=True, password="root-password")
        alice = accounts.create_user(s, "alice", now, organisation="Alpha University")
        bob = accounts.create_user(s, "bob", now, organisation="Beta Startup")
        accounts.create_project(s, "alpha", "Alpha University", now)
        accounts.create_project(s, "beta", "Beta Startup", now)
        accounts.add_member(s, "alpha", "alice")
        accounts.add_member(s, "beta", "bob")
        accounts.create_allocation(s, "alpha", 100.0, now)
        accounts.create_allocation(s, "beta", 100.0, now)
    return {"root": admin.token, "alice": alice.token, "bob": bob.token}


def _until(what: str, check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def _auth(server: Server, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.tokens[who]}"}


def _submit(server: Server, who: str, project: str, command: str, **extra: Any) -> int:
    body = {"project": project, "command": command, "gpus_per_node": 1, "gpu_type": "vgpu"}
    body |= {"time_limit_s": 900, **extra}
    resp = server.client.post("/api/v1/jobs", json=body, headers=_auth(server, who))
    assert resp.status_code == 201, resp.text
    return int(resp.json()["id"])


def _job(server: Server, who: str, job_id: int) -> dict[str, Any]:
    resp = server.client.get(f"/api/v1/jobs/{job_id}", headers=_auth(server, who))
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _state(server: Server, who: str, job_id: int, *states: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        job = _job(server, who, job_id)
        return job if job["state"] in states else None

    found: dict[str, Any] = _until(f"job {job_id} to be {states}", reached)
    return found


def _log(server: Server, who: str, job_id: int, stream: str = "stdout") -> httpx.Response:
    return server.client.get(
        f"/api/v1/jobs/{job_id}/logs", params={"stream": stream}, headers=_auth(server, who)
    )


def _uid_processes(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
                if entry.stat().st_uid == uid and text[text.rfind(")") + 2] != "Z":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _fingerprint(paths: list[Path]) -> dict[str, tuple[str, int, int, int]]:
    result = {}
    for path in paths:
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        result[str(path)] = (digest, st.st_uid, st.st_gid, st.st_mode)
    return result


def _start(settings: Settings) -> tuple[AppContext, TestClient]:
    ctx = build_context(settings)
    ensure_site(ctx)
    client = TestClient(create_app(ctx), base_url="https://testserver")
    client.__enter__()
    return ctx, client


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tag = secrets.token_hex(2)
    base = TEST_UID_BASE + secrets.randbelow(90) * 100
    policy = AccountPolicy(base, base + 99, f"s{tag}u-", f"s{tag}g-")
    root = tmp_path_factory.mktemp("hostile-server")
    (root / "site.yaml").write_text(SITE)
    config = Path(f"/etc/gpucenter-hostile-test-{tag}.conf")  # in /etc: visible, unless hidden
    config.write_text(f"GPUCENTER_SECRET_KEY={CONFIG_SECRET}\n")
    os.chmod(config, 0o644)
    settings = _settings(root, policy, config, make_fake_gpus(root / "dev", 3))
    migrate(settings.effective_database_url)  # as `gpucenter db upgrade` does: 0644 files
    old = os.environ.get("GPUCENTER_TEST_SERVER_SECRET")
    os.environ["GPUCENTER_TEST_SERVER_SECRET"] = SERVER_SECRET
    ctx, client = _start(settings)
    try:
        yield Server(settings, ctx, client, policy, _seed(ctx))
    finally:
        client.__exit__(None, None, None)
        ctx.dispatcher.shutdown()
        ctx.engine.dispose()
        remove_test_accounts(policy)
        config.unlink(missing_ok=True)
        if old is None:
            os.environ.pop("GPUCENTER_TEST_SERVER_SECRET", None)
        else:
            os.environ["GPUCENTER_TEST_SERVER_SECRET"] = old


@dataclass
class Attack:
    a_job: dict[str, Any]
    b_job: dict[str, Any]
    results: dict[str, Any]
    before: dict[str, tuple[str, int, int, int]]
    after: dict[str, tuple[str, int, int, int]]
    a_pids: list[int]
    a_uid: int
    b_ids: tuple[int, int]
    token_file: Path
    a_stdout_before: str


@pytest.fixture(scope="module")
def attack(server: Server) -> Attack:
    """A's job runs; B's probe attacks it and the server; everything is collected."""
    settings = server.settings
    tenants = settings.tenant_root.resolve()
    a_id = _submit(server, "alice", "alpha", A_COMMAND, env={"HF_TOKEN": A_ENV_SECRET})
    a_job = _state(server, "alice", a_id, "RUNNING", "FAILED")
    assert a_job["state"] == "RUNNING", a_job
    with server.ctx.sessions() as s:
        alice = repo.user_by_name(s, "alice")
        bob = repo.user_by_name(s, "bob")
        assert alice is not None and bob is not None
        assert alice.unix_uid is not None and bob.unix_uid is not None, "accounts provisioned"
        a_uid, b_ids = alice.unix_uid, (bob.unix_uid, bob.unix_gid or -1)
    a_run = tenants / "jobs" / f"job-{a_id}.run-1"
    _until("A's result", lambda: (a_run / "result.txt").exists())
    a_pids = _until("A's processes", lambda: _uid_processes(a_uid))
    a_status = read_sandbox_status(settings.log_dir / "spool" / f"job-{a_id}.run-1.json")
    assert a_status is not None
    # A's CLI token: a 0600 file in A's home, as `gpucenter login` leaves it.
    home = tenants / "homes" / f"{server.policy.user_prefix}alice"
    token_dir = home / ".config" / "gpucenter"
    token_dir.mkdir(parents=True, mode=0o700)
    token_file = token_dir / "token"
    token_file.write_text(server.tokens["alice"])
    for path in (home / ".config", token_dir, token_file):
        os.chown(path, a_uid, alice.unix_gid or -1)
    os.chmod(token_file, 0o600)
    a_project = tenants / "projects" / f"{server.policy.group_prefix}alpha"
    var = settings.var_dir.resolve()
    root_only = var / "root-only.txt"
    root_only.write_text("ROOT ONLY")
    os.chmod(root_only, 0o600)
    watched = [token_file, a_run / "stdout", a_run / "result.txt", root_only]
    before = _fingerprint(watched)
    a_stdout_before = _log(server, "alice", a_id).text
    db = var / "gpucenter.db"
    targets = {
        "read": {
            "A's token": str(token_file),
            "A's output": str(a_run / "stdout"),
            "A's result": str(a_run / "result.txt"),
            "A's project file": str(a_project / "shared.txt"),
            "database": str(db),
            "key ring": str(var / "secrets" / "audit-keys.json"),
            "A's sandbox status": str(
                settings.log_dir.resolve() / "spool" / f"job-{a_id}.run-1.json"
            ),
            "hidden config": str(next(iter(settings.isolation_hidden_paths))),
            "root-only file": str(root_only),
        },
        "write": {"database": str(db), "A's output": str(a_run / "stdout")},
        "create": {
            "in A's home": str(home / "planted"),
            "in A's run directory": str(a_run / "planted"),
            "in the state directory": str(var / "planted"),
            "in the jobs root": str(tenants / "jobs" / "planted"),
            "own home": "HOME/probe.txt",
            "own run directory": "probe.txt",
        },
        "link": {
            "A's output": str(a_run / "stdout"),
            "A's token": str(token_file),
            "database": str(db),
            "root-only file": str(root_only),
        },
        "list": {
            "state directory": str(var),
            "A's home": str(home),
            "jobs root": str(tenants / "jobs"),
            "homes": str(tenants / "homes"),
        },
        "signal": {"A's job": a_pids[0], "A's sandbox": a_status.child_pid},
        "proc": {"server": os.getpid()},
        "a_gpu": f"/dev/nvidia{a_job['placement'][0]['gpus'][0]}",
        "root_only": str(root_only),
    }
    probe = "exec python3 - <<'PROBE'\n" + PROBE + "PROBE\n"  # python is the job
    b_id = _submit(server, "bob", "beta", probe, env={"TARGETS": json.dumps(targets)})
    b_job = _state(server, "bob", b_id, "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")
    stdout = _log(server, "bob", b_id).text
    assert b_job["state"] == "COMPLETED", (b_job, stdout)
    results = json.loads(stdout.strip().splitlines()[-1])
    time.sleep(0.3)  # a kill that worked would show by now
    return Attack(
        a_job=_job(server, "alice", a_id),
        b_job=b_job,
        results=results,
        before=before,
        after=_fingerprint(watched),
        a_pids=a_pids,
        a_uid=a_uid,
        b_ids=b_ids,
        token_file=token_file,
        a_stdout_before=a_stdout_before,
    )


ATTACKS = [
    "read A's token",
    "read A's output",
    "read A's result",
    "read A's project file",
    "read database",
    "read key ring",
    "read A's sandbox status",
    "read hidden config",
    "read root-only file",
    "write database",
    "write A's output",
    "create in A's home",
    "create in A's run directory",
    "create in the state directory",
    "create in the jobs root",
    "hard-link A's output",
    "hard-link A's token",
    "hard-link database",
    "hard-link root-only file",
    "list state directory",
    "list A's home",
    "signal A's job",
    "signal A's sandbox",
    "signal everyone",
    "server environ server",
    "server cmdline server",
    "A's GPU",
    "become root",
]


@pytest.mark.parametrize("name", ATTACKS)
def test_tenant_b_cannot(attack: Attack, name: str) -> None:
    outcome = attack.results[name]
    assert outcome["ok"] is False, f"{name} succeeded: {outcome}"


@pytest.mark.parametrize("name", ["create own home", "create own run directory", "own GPU"])
def test_the_probe_can_use_what_is_its_own(attack: Attack, name: str) -> None:
    """Positive controls: the attacks fail because of isolation, not a broken probe."""
    assert attack.results[name]["ok"] is True, attack.results[name]


def test_tenant_a_sees_nothing_changed(server: Server, attack: Attack) -> None:
    assert attack.after == attack.before
    assert attack.a_job["state"] == "RUNNING"
    assert all(pid in _uid_processes(attack.a_uid) for pid in attack.a_pids)
    assert _log(server, "alice", attack.a_job["id"]).text == attack.a_stdout_before
    assert attack.a_stdout_before == "A-SECRET-OUTPUT\n"


def test_shared_parents_show_only_what_is_b_s_own(server: Server, attack: Attack) -> None:
    """The sandbox builds the parents of B's directories itself: the jobs root and the homes
    hold only B's run directory and home there, nobody else's."""
    assert attack.results["list jobs root"]["value"] == [f"job-{attack.b_job['id']}.run-1"]
    assert attack.results["list homes"]["value"] == [f"{server.policy.user_prefix}bob"]


def test_the_database_was_not_written(server: Server, attack: Attack) -> None:
    assert attack.results["write database"]["ok"] is False
    db = server.settings.var_dir / "gpucenter.db"
    assert b"pwned by B" not in db.read_bytes()


def test_jobs_run_as_their_owners_accounts(server: Server, attack: Attack) -> None:
    """Each job ran as the account provisioned for its owner: never as the server (root)."""
    uid, euid, gid, groups = attack.results["ids"]
    assert (uid, euid, gid) == (attack.b_ids[0], attack.b_ids[0], attack.b_ids[1])
    assert uid != 0 and len(groups) == 1  # the job's project group only
    assert attack.a_uid not in (0, uid)
    run = server.settings.tenant_root / "jobs" / f"job-{attack.a_job['id']}.run-1"
    st = run.stat()
    # The project does not share its outputs (the default): the owner's alone.
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (attack.a_uid, 0o700)
    out = (run / "stdout").stat()
    assert (out.st_uid, stat.S_IMODE(out.st_mode)) == (attack.a_uid, 0o600)


def test_a_job_environment_is_its_owners_not_the_servers(server: Server, attack: Attack) -> None:
    env = attack.results["env"]
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["HOME"] == str(
        server.settings.tenant_root.resolve() / "homes" / f"{server.policy.user_prefix}bob"
    )
    assert env["USER"] == f"{server.policy.user_prefix}bob"
    text = json.dumps(attack.results)
    for secret in (SERVER_SECRET, CONFIG_SECRET, A_ENV_SECRET, server.tokens["alice"]):
        assert secret not in text
    assert "VIRTUAL_ENV" not in env
    gpucenter = {k for k in env if k.startswith("GPUCENTER_")}
    assert gpucenter <= {"GPUCENTER_JOB_ID", "GPUCENTER_NODES", "GPUCENTER_PROJECT_DIR"}


def test_the_server_state_is_private(server: Server, attack: Attack) -> None:
    """0700/0600 from the start, although `migrate` made them 0755/0644."""
    var = server.settings.var_dir
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    assert stat.S_IMODE((var / "gpucenter.db").stat().st_mode) == 0o600
    jobs = server.settings.tenant_root / "jobs"
    assert jobs.stat().st_uid == 0 and not jobs.stat().st_mode & 0o022  # never 1777


def test_other_tenants_are_not_in_passwd(server: Server, attack: Attack) -> None:
    passwd = attack.results["passwd"]["value"]
    assert f"{server.policy.user_prefix}bob" in passwd
    assert f"{server.policy.user_prefix}alice" not in passwd


def test_the_job_sees_only_its_own_processes(attack: Attack) -> None:
    assert max(attack.results["processes"]["value"]) < 10


def test_the_api_shows_b_nothing_of_a(server: Server, attack: Attack) -> None:
    a_id = attack.a_job["id"]
    assert (
        server.client.get(f"/api/v1/jobs/{a_id}", headers=_auth(server, "bob")).status_code == 404
    )
    assert _log(server, "bob", a_id).status_code == 404
    own = server.client.get("/api/v1/jobs", headers=_auth(server, "alice")).json()["items"]
    # Lists carry env names only, their values masked (issue 17: values reach the owner's
    # own job view alone).
    assert all(set(job["env"].values()) <= {"********"} for job in own)


def test_the_log_api_refuses_a_link_the_job_left(server: Server, attack: Attack) -> None:
    resp = _log(server, "bob", attack.b_job["id"], "stderr")
    assert resp.status_code == 409, resp.text
    assert "ROOT ONLY" not in resp.text and "symlink" in resp.text


def test_the_log_api_does_not_hang_on_a_fifo(server: Server, attack: Attack) -> None:
    job_id = _submit(server, "bob", "beta", "rm stdout && mkfifo stdout && exit 0")
    _state(server, "bob", job_id, "COMPLETED", "FAILED")
    started = time.monotonic()
    resp = _log(server, "bob", job_id)
    assert time.monotonic() - started < 5
    assert resp.status_code == 409 and "FIFO" in resp.text, resp.text


def test_the_log_api_reads_only_the_owners_own_file(server: Server, attack: Attack) -> None:
    """A hard link to a file of someone else's in place of a log (made here by root, as a job
    could on a machine where its directory and a secret share a mount) is refused: a log must
    belong to the owner of its run directory."""
    job_id = _submit(server, "bob", "beta", "echo mine")
    _state(server, "bob", job_id, "COMPLETED")
    assert _log(server, "bob", job_id).text == "mine\n"
    stdout = server.settings.tenant_root / "jobs" / f"job-{job_id}.run-1" / "stdout"
    stdout.unlink()
    os.link(server.settings.var_dir / "root-only.txt", stdout)
    resp = _log(server, "bob", job_id)
    assert resp.status_code == 409 and "owned by uid 0" in resp.text, resp.text


def test_the_end_note_never_writes_through_a_link(server: Server, attack: Attack) -> None:
    """A failed job gets a note appended to its stderr by the server (root): not through the
    link the job left in its place."""
    victim = server.settings.var_dir / "root-only.txt"
    before = victim.read_bytes()
    job_id = _submit(server, "bob", "beta", f"rm stderr && ln -s {victim} stderr && exit 3")
    job = _state(server, "bob", job_id, "FAILED", "COMPLETED")
    assert job["state"] == "FAILED" and job["exit_code"] == 3
    assert victim.read_bytes() == before


def _run_dir(server: Server, job_id: int) -> Path:
    return server.settings.tenant_root.resolve() / "jobs" / f"job-{job_id}.run-1"


def test_the_log_api_refuses_a_hard_link_to_another_tenants_file(
    server: Server, attack: Attack
) -> None:
    """B's logs replaced by hard links to A's output (made here by root: inside its sandbox B
    cannot even see A's files, see "hard-link A's output"): refused, both streams, because
    the file is A's and the run directory B's; A's output is never shown to B."""
    job_id = _submit(server, "bob", "beta", "echo mine; echo mine too >&2")
    _state(server, "bob", job_id, "COMPLETED")
    a_stdout = _run_dir(server, attack.a_job["id"]) / "stdout"
    for stream in ("stdout", "stderr"):
        log = _run_dir(server, job_id) / stream
        log.unlink()
        os.link(a_stdout, log)
        resp = _log(server, "bob", job_id, stream)
        assert resp.status_code == 409, resp.text
        assert f"owned by uid {attack.a_uid}" in resp.text
        assert "A-SECRET-OUTPUT" not in resp.text
    assert _log(server, "alice", attack.a_job["id"]).text == attack.a_stdout_before


def test_the_end_note_never_writes_through_a_hard_link(server: Server, attack: Attack) -> None:
    """B's job fails after its stderr became a hard link to A's output: the server's note at
    the end (written as root) must not land in A's file. The owner check does this: the link
    is a regular file, not a symlink, so only its owner gives it away."""
    script = "rm stderr; while [ ! -e go ]; do sleep 0.1; done; exit 3"
    job_id = _submit(server, "bob", "beta", script)
    _state(server, "bob", job_id, "RUNNING")
    run = _run_dir(server, job_id)
    _until("B's stderr to go", lambda: not os.path.lexists(run / "stderr"))
    a_stdout = _run_dir(server, attack.a_job["id"]) / "stdout"
    before = a_stdout.read_bytes()
    os.link(a_stdout, run / "stderr")
    (run / "go").touch()
    job = _state(server, "bob", job_id, "FAILED", "COMPLETED")
    assert job["state"] == "FAILED" and job["exit_code"] == 3
    assert a_stdout.read_bytes() == before == attack.a_stdout_before.encode()
    assert _log(server, "alice", attack.a_job["id"]).text == attack.a_stdout_before


def test_a_planted_run_directory_is_never_written_through(server: Server, attack: Attack) -> None:
    """A run directory already there when B's job starts (planted here by root; the jobs root
    is root's 0755, so a tenant cannot), its stdout and stderr hard links to A's output: it
    is moved aside, B's job writes into a fresh directory of its own, A's file is unchanged."""
    with server.ctx.sessions() as s:
        next_id = int(s.scalar(select(func.max(JobRow.id))) or 0) + 1
    planted = _run_dir(server, next_id)
    planted.mkdir()
    a_stdout = _run_dir(server, attack.a_job["id"]) / "stdout"
    for stream in ("stdout", "stderr"):
        os.link(a_stdout, planted / stream)
    job_id = _submit(server, "bob", "beta", "echo mine; echo mine too >&2")
    assert job_id == next_id
    _state(server, "bob", job_id, "COMPLETED")
    assert _log(server, "bob", job_id).text == "mine\n"
    assert _log(server, "bob", job_id, "stderr").text == "mine too\n"
    assert a_stdout.read_bytes() == attack.a_stdout_before.encode()
    fresh = _run_dir(server, job_id) / "stdout"
    assert fresh.stat().st_ino != a_stdout.stat().st_ino
    assert fresh.stat().st_uid == attack.b_ids[0]


MALFORMED = (
    b"\xff\xfe\x00\x1b[2J\x1b]0;owned\x07\r\xc3\x28 \xed\xa0\x80 \xf4\x90\x80\x80 half\xe2\x82"
)


def test_malformed_bytes_in_a_log_come_back_as_they_are(server: Server, attack: Attack) -> None:
    """Invalid UTF-8, NUL, terminal escapes, a truncated sequence at the end: the log API
    returns the bytes unchanged, the event stream as JSON text (replacement characters), and
    the server stays well."""
    writer = f"import sys; sys.stdout.buffer.write(bytes.fromhex('{MALFORMED.hex()}'))"
    job_id = _submit(server, "bob", "beta", f'python3 -c "{writer}"')
    _state(server, "bob", job_id, "COMPLETED")
    resp = _log(server, "bob", job_id)
    assert resp.status_code == 200 and resp.content == MALFORMED
    with server.client.stream(
        "GET", f"/api/v1/jobs/{job_id}/events", headers=_auth(server, "bob")
    ) as events:
        assert events.status_code == 200
        frames = "".join(events.iter_text())
    data = [
        json.loads(line[len("data: ") :])
        for line in frames.splitlines()
        if line.startswith("data: ")
    ]
    text = "".join(d.get("text", "") for d in data)
    assert text == MALFORMED.decode("utf-8", errors="replace")
    assert data[-1] == {"state": "COMPLETED", "exit_code": 0}
    assert server.client.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    "field",
    [
        {"command": "echo a\u0000b"},
        {"command": "echo \ud800"},
        {"command": "true", "env": {"X": "a\u0000b"}},
        {"command": "true", "env": {"X\u0000Y": "1"}},
        {"command": "true", "env": {"X": "\udcff"}},
    ],
    ids=[
        "NUL in command",
        "lone surrogate in command",
        "NUL in env value",
        "NUL in env name",
        "lone surrogate in env value",
    ],
)
def test_malformed_text_in_a_submission_fails_alone(
    server: Server, attack: Attack, field: dict[str, Any]
) -> None:
    """Refused at the boundary (422), or taken and then FAILED with the reason shown to B;
    never a 500, never a stopped scheduler: A's next job still starts and ends."""
    body = {"project": "beta", "gpus_per_node": 1, "gpu_type": "vgpu", "time_limit_s": 60}
    content = json.dumps(body | field).encode()  # ensure_ascii: the escapes reach the server
    resp = server.client.post(
        "/api/v1/jobs",
        content=content,
        headers={**_auth(server, "bob"), "Content-Type": "application/json"},
    )
    assert resp.status_code in (201, 422), resp.text
    if resp.status_code == 201:
        job = _state(server, "bob", int(resp.json()["id"]), "FAILED", "COMPLETED")
        assert job["state"] == "FAILED" and job["reason_detail"].startswith("could not start")
    other = _submit(server, "alice", "alpha", "echo alongside")
    assert _state(server, "alice", other, "COMPLETED", "FAILED")["state"] == "COMPLETED"
    assert server.client.get("/readyz").status_code == 200


def test_a_job_paused_mid_write_blocks_nobody(server: Server, attack: Attack) -> None:
    """B's job writes half a line and stops itself (SIGSTOP): its log reads at once with what
    is there, another tenant's job starts and ends meanwhile, and a cancel still ends it."""
    job_id = _submit(server, "bob", "beta", "printf 'half a li'; kill -STOP $$; echo ne")
    _state(server, "bob", job_id, "RUNNING")
    _until("the half line", lambda: _log(server, "bob", job_id).text == "half a li")
    started = time.monotonic()
    resp = _log(server, "bob", job_id)
    assert time.monotonic() - started < 5 and resp.headers["X-Job-Finished"] == "false"
    other = _submit(server, "alice", "alpha", "echo alongside")
    assert _state(server, "alice", other, "COMPLETED", "FAILED")["state"] == "COMPLETED"
    assert _log(server, "alice", other).text == "alongside\n"
    resp = server.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=_auth(server, "bob"))
    assert resp.status_code == 200, resp.text
    assert _state(server, "bob", job_id, "CANCELLED", "FAILED")["state"] == "CANCELLED"
    _until("B's processes to end", lambda: not _uid_processes(attack.b_ids[0]))
    assert _log(server, "bob", job_id).text.startswith("half a li")
    assert _job(server, "alice", attack.a_job["id"])["state"] == "RUNNING"


def test_a_restarted_server_adopts_only_what_it_proves_is_its_own(
    server: Server, attack: Attack
) -> None:
    """After a restart, A's job is re-adopted (proven by its sandbox, not by a marker) and
    can still be cancelled; B's process carrying A's job id in its environment is never
    touched."""
    a_id = attack.a_job["id"]
    forger = _submit(server, "bob", "beta", f"export GPUCENTER_JOB_ID={a_id}; exec sleep 600")
    _state(server, "bob", forger, "RUNNING")
    forger_pids = _until("the forger", lambda: _uid_processes(attack.b_ids[0]))
    server.client.__exit__(None, None, None)  # the loop stops; running jobs stay up
    server.ctx.engine.dispose()
    server.ctx, server.client = _start(server.settings)
    _until("A's adoption", lambda: a_id in server.ctx.dispatcher.running_job_ids())
    resp = server.client.post(f"/api/v1/jobs/{a_id}/cancel", headers=_auth(server, "alice"))
    assert resp.status_code == 200, resp.text
    assert _state(server, "alice", a_id, "CANCELLED", "FAILED")["state"] == "CANCELLED"
    _until("A's processes to end", lambda: not _uid_processes(attack.a_uid))
    assert all(pid in _uid_processes(attack.b_ids[0]) for pid in forger_pids)
    assert _job(server, "bob", forger)["state"] == "RUNNING"
    server.client.post(f"/api/v1/jobs/{forger}/cancel", headers=_auth(server, "bob"))
    assert _state(server, "bob", forger, "CANCELLED")["state"] == "CANCELLED"
