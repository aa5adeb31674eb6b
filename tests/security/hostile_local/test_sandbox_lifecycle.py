"""A sandboxed job's life as the dispatcher sees it: status, ending, surviving the server.

Real root, accounts and bubblewrap (see conftest). What is checked here is what the local
dispatcher will rely on: bwrap records the exit code where the job cannot forge it; a job
outlives the process that started it (re-adoption after a restart); `kill_sandbox` ends
everything in the namespace, including processes that left the job's process group; a pid
that is not our sandbox is never signalled; secrets in the environment never appear on a
command line; the network is shared unless the policy says otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpucenter.dispatch.isolation import (
    RunAs,
    SandboxJob,
    SandboxPolicy,
    SandboxStatus,
    kill_sandbox,
    make_owned_dir,
    prepare_job_output,
    prepare_sandbox,
    read_sandbox_status,
    read_tail,
    sandbox_is_ours,
    shell_command,
    start_sandboxed,
)
from tests.security.hostile_local.conftest import TwoTenants, require

pytestmark = pytest.mark.usefixtures("as_root_with_bwrap")


class Runner:
    """Starts sandboxed jobs for tenant B under a root-owned site directory."""

    def __init__(self, root: Path, run_as: RunAs) -> None:
        self.root = root
        self.run_as = run_as
        self.spool = root / "spool"
        self.spool.mkdir(mode=0o700)
        for sub in ("work", "outputs"):
            (root / sub).mkdir(mode=0o755)
        self.started: list[SandboxStatus] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(
        self, job_id: int, command: str, *, policy: SandboxPolicy | None = None, **env: str
    ) -> tuple[subprocess.Popen[bytes], Path, Path]:
        workdir = make_owned_dir(
            self.root / "work", f"job-{job_id}", uid=self.run_as.uid, gid=self.run_as.gid
        )
        output = prepare_job_output(
            self.root / "outputs", f"job-{job_id}", uid=self.run_as.uid, gid=self.run_as.gid
        )
        job = SandboxJob(job_id, shell_command(command), workdir, self.run_as, env=env)
        status = self.spool / f"job-{job_id}.status"
        with prepare_sandbox(job, policy or SandboxPolicy(), status_path=status) as prepared:
            process = start_sandboxed(
                prepared, stdout=output.files["stdout"], stderr=output.files["stderr"]
            )
        output.close()
        self.processes.append(process)
        return process, output.path, status

    def status(self, path: Path) -> SandboxStatus:
        wait_until(lambda: read_sandbox_status(path) is not None, "bwrap's status")
        status = read_sandbox_status(path)
        assert status is not None
        self.started.append(status)
        return status

    def stdout(self, output: Path) -> str:
        return read_tail(output / "stdout", expected_uid=self.run_as.uid).data.decode()

    def cleanup(self) -> None:
        for status in self.started:
            kill_sandbox(status)
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def runner(two_tenants: TwoTenants, tmp_path: Path) -> Iterator[Runner]:
    os.chmod(tmp_path, 0o755)
    r = Runner(tmp_path, two_tenants.b.run_as)
    yield r
    r.cleanup()


def uid_processes(uid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_text = (entry / "stat").read_text()
            if entry.stat().st_uid == uid and stat_text[stat_text.rfind(")") + 2] != "Z":
                found.add(int(entry.name))
        except OSError:
            continue
    return found


def test_the_exit_code_is_recorded_by_bwrap(runner: Runner) -> None:
    process, output, status_path = runner.start(1, "echo out; exit 7")
    assert process.wait(timeout=30) == 7
    status = read_sandbox_status(status_path)
    assert status is not None and status.exit_code == 7
    assert runner.stdout(output) == "out\n"
    wait_until(lambda: not sandbox_is_ours(status), "the namespace to end")
    assert kill_sandbox(status) is False  # gone: nothing is signalled


def test_the_job_owns_what_it_writes(runner: Runner) -> None:
    process, _output, _status = runner.start(2, "echo data > made.txt")
    assert process.wait(timeout=30) == 0
    made = runner.root / "work" / "job-2" / "made.txt"
    st = made.stat()
    assert (st.st_uid, st.st_gid) == (runner.run_as.uid, runner.run_as.gid)


def test_kill_ends_background_and_setsid_processes(runner: Runner) -> None:
    """The main process exits; what it left (even in another session) dies with the sandbox."""
    command = "setsid sleep 300 & sleep 300 & echo started; exit 0"
    process, _output, status_path = runner.start(3, command)
    assert process.wait(timeout=30) == 0  # bwrap reports the main process's exit
    status = runner.status(status_path)
    assert status.exit_code == 0
    wait_until(lambda: len(uid_processes(runner.run_as.uid)) >= 2, "the leftovers")
    assert sandbox_is_ours(status)  # the namespace lives on with them
    assert kill_sandbox(status) is True
    wait_until(lambda: not uid_processes(runner.run_as.uid), "every leftover to end")
    assert not sandbox_is_ours(status)


def test_the_job_outlives_the_process_that_started_it(runner: Runner) -> None:
    """No --die-with-parent: a server restart must not take running jobs with it."""
    workdir = make_owned_dir(
        runner.root / "work", "job-4", uid=runner.run_as.uid, gid=runner.run_as.gid
    )
    status_path = runner.spool / "job-4.status"
    program = f"""
import subprocess
from pathlib import Path
from gpucenter.dispatch.isolation import RunAs, SandboxJob, SandboxPolicy, prepare_sandbox
from gpucenter.dispatch.isolation import shell_command, start_sandboxed
run_as = RunAs(*{json.dumps([runner.run_as.name, runner.run_as.uid, runner.run_as.gid])})
job = SandboxJob(4, shell_command("exec sleep 300"), Path({str(workdir)!r}), run_as)
with prepare_sandbox(job, SandboxPolicy(), status_path=Path({str(status_path)!r})) as p:
    start_sandboxed(p, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
"""  # the "server" starts the job and exits at once, as a crashing server would
    server = subprocess.run([sys.executable, "-c", program], timeout=60, capture_output=True)
    assert server.returncode == 0, server.stderr.decode()
    status = runner.status(status_path)
    time.sleep(0.5)
    assert sandbox_is_ours(status), "the job died with the process that started it"
    assert uid_processes(runner.run_as.uid)
    assert kill_sandbox(status)
    wait_until(lambda: not uid_processes(runner.run_as.uid), "the adopted job to end")


def test_a_pid_that_is_not_our_sandbox_is_never_signalled(runner: Runner) -> None:
    process, _output, status_path = runner.start(5, "exec sleep 300")
    status = runner.status(status_path)
    wrong_namespace = SandboxStatus(status.child_pid, status.pid_namespace + 1)
    assert not sandbox_is_ours(wrong_namespace)
    assert kill_sandbox(wrong_namespace) is False
    wait_until(lambda: bool(uid_processes(runner.run_as.uid)), "the job to run as its owner")
    job_pid = next(iter(uid_processes(runner.run_as.uid)))  # the user's own process
    ns = os.readlink(f"/proc/{job_pid}/ns/pid")
    users_own = SandboxStatus(job_pid, int(ns[ns.index("[") + 1 : -1]))
    assert not sandbox_is_ours(users_own), "a process of the job's owner passed as ours"
    assert process.poll() is None and sandbox_is_ours(status)


def test_secrets_in_the_environment_are_not_on_any_command_line(runner: Runner) -> None:
    secret = "hf_" + os.urandom(12).hex()
    process, output, status_path = runner.start(
        6, 'echo "$HF_TOKEN"; exec sleep 300', HF_TOKEN=secret
    )
    runner.status(status_path)
    wait_until(lambda: runner.stdout(output) == secret + "\n", "the job to print its secret")
    for pid in [process.pid, *uid_processes(runner.run_as.uid)]:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert secret.encode() not in cmdline, f"the secret is on pid {pid}'s command line"


def _can_connect_from_job(runner: Runner, job_id: int, policy: SandboxPolicy) -> str:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        command = f"(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo yes || echo no"
        process, output, _status = runner.start(job_id, command, policy=policy)
        assert process.wait(timeout=30) == 0
    return runner.stdout(output).strip()


def test_the_network_is_shared_unless_the_policy_says_otherwise(runner: Runner) -> None:
    assert _can_connect_from_job(runner, 7, SandboxPolicy()) == "yes"
    assert _can_connect_from_job(runner, 8, SandboxPolicy(share_network=False)) == "no"


SINGLE_USER_PROGRAM = """
import json, os, subprocess, sys
from pathlib import Path
from gpucenter.dispatch.isolation import SandboxJob, SandboxPolicy, prepare_sandbox
from gpucenter.dispatch.isolation import sandbox_problem, shell_command, start_sandboxed
work, state = Path(sys.argv[1]), Path(sys.argv[2])
problem = sandbox_problem(SandboxPolicy())
if problem is not None:
    print(json.dumps({"problem": problem}))
    sys.exit(0)
command = f"id -u; cat {state}/gpucenter.db 2>/dev/null || echo hidden"
job = SandboxJob(1, shell_command(command), work, None)
with prepare_sandbox(job, SandboxPolicy()) as p:
    process = start_sandboxed(p, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
out = process.stdout.read().decode()
print(json.dumps({"code": process.wait(), "out": out}))
"""


@pytest.fixture
def nobodys_dir() -> Iterator[Path]:
    """A directory user nobody can reach (pytest's own tmp_path is root's 0700)."""
    path = Path(tempfile.mkdtemp(prefix="gpucenter-single-user-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_single_user_mode_sandboxes_a_normal_user(nobodys_dir: Path) -> None:
    """`make run` as a normal user: no identity switch, but the job still cannot see the
    server's state. bwrap then uses an unprivileged user namespace, which a host may forbid
    (it then reports the problem and single-user mode runs jobs unsandboxed)."""
    nobody = 65534
    work, state = nobodys_dir / "work", nobodys_dir / "state"
    for path in (nobodys_dir, work, state):
        path.mkdir(exist_ok=True)
        os.chown(path, nobody, nobody)
    (state / "gpucenter.db").write_text("the server's database")
    os.chown(state / "gpucenter.db", nobody, nobody)
    repo = Path(__file__).resolve().parents[3]
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")  # nobody can run it
    if python is None:
        require("needs python3 under /usr, which user nobody can run")
    done = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(python),
         "-c", SINGLE_USER_PROGRAM, str(work), str(state)],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo), "HOME": str(work)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "problem" in result:
        pytest.skip(f"unprivileged bubblewrap is not allowed here: {result['problem']}")
    assert result == {"code": 0, "out": f"{nobody}\nhidden\n"}
