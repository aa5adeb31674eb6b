"""The local dispatcher against real processes: states, logs, GPU visibility, killing groups.

Each behaviour is checked in both single-user modes: unsandboxed (a process group of the
server's user) and sandboxed (bubblewrap, as the server's user; skipped where bubblewrap
cannot run, except in CI). Multi-tenant runs (as the owner) are in tests/security.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from gpucenter.core.model import NodeGpus
from gpucenter.dispatch.base import DispatchError, LaunchRequest, StateChange
from gpucenter.dispatch.local import dispatcher as local
from gpucenter.dispatch.local.dispatcher import LocalDispatcher
from gpucenter.dispatch.local.isolation import LocalIsolation
from gpucenter.domain.clock import ManualClock
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState
from tests.dispatch.builders import launch_request, sandbox_isolation

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/bash"), reason="needs /bin/bash")

DEADLINE_S = 10.0


def request(
    job_id: int,
    command: str,
    *,
    placement: Sequence[NodeGpus] = (NodeGpus("local", (0,)),),
    time_limit_s: int = 60,
    workdir: str | None = None,
    env: Mapping[str, str] | None = None,
) -> LaunchRequest:
    return launch_request(
        job_id, command, placement=placement, time_limit_s=time_limit_s, workdir=workdir, env=env
    )


def eventually(check: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    """Wait for `check` with a deadline, instead of sleeping a fixed time and hoping."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for: {what}")
        time.sleep(0.02)


def wait_end(dispatcher: LocalDispatcher, job_id: int) -> StateChange:
    """Poll until the job's StateChange comes out, and check it comes out only once."""
    found: list[StateChange] = []

    def ended() -> bool:
        found.extend(c for c in dispatcher.poll() if c.job_id == job_id)
        return bool(found)

    eventually(ended, f"job {job_id} to end")
    assert len(found) == 1
    assert JobId(job_id) not in dispatcher.running_job_ids()
    return found[0]


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def read(path: str) -> str:
    return Path(path).read_text()


@pytest.fixture
def dispatcher(tmp_path: Path, mode: LocalIsolation | None) -> Iterator[LocalDispatcher]:
    d = LocalDispatcher(tmp_path / "logs", kill_grace_s=0.5, isolation=mode)
    yield d
    d.shutdown()


def test_a_job_completes_and_its_stdout_is_in_the_out_file(dispatcher: LocalDispatcher) -> None:
    launched = dispatcher.submit(request(1, "echo hello; echo oops >&2; pwd"))

    change = wait_end(dispatcher, 1)

    assert change.state is JobState.COMPLETED
    assert change.exit_code == 0
    assert launched.stdout_path.endswith("/job-1.run-1/stdout")
    out = read(launched.stdout_path).splitlines()
    assert out[0] == "hello"
    assert out[1].endswith("/job-1.run-1")  # default workdir: the run's own directory
    assert read(launched.stderr_path) == "oops\n"  # no gpucenter note on success
    assert launched.external_id.isdigit()


@pytest.mark.parametrize(
    ("placement", "index_map", "expected"),
    [
        ((NodeGpus("local", (1, 3)),), None, "1,3"),
        ((NodeGpus("local", ()),), None, ""),
        ((NodeGpus("local", (0, 1)),), {"local": [2, 5, 7]}, "2,5"),
        ((NodeGpus("other", (0, 1)),), {"local": [2, 5, 7]}, "0,1"),
        ((NodeGpus("v1", (0, 1)), NodeGpus("v2", (0, 1))), {"v2": [4, 5]}, "0,1,4,5"),
    ],
    ids=["slots", "no-gpus", "remapped", "unmapped-node", "virtual-multi-node"],
)
def test_cuda_visible_devices_is_exactly_the_placement(
    tmp_path: Path,
    mode: LocalIsolation | None,
    monkeypatch: pytest.MonkeyPatch,
    placement: tuple[NodeGpus, ...],
    index_map: Mapping[str, Sequence[int]] | None,
    expected: str,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,4,5,6,7")  # the server's must not leak
    d = LocalDispatcher(tmp_path, gpu_index_map=index_map, isolation=mode)
    launched = d.submit(
        request(
            7,
            'echo "[$CUDA_VISIBLE_DEVICES] $GPUCENTER_NODES $GPUCENTER_JOB_ID $CUDA_DEVICE_ORDER"',
            placement=placement,
            env={"CUDA_VISIBLE_DEVICES": "0,1,2,3"},  # nor may the job's own env widen it
        )
    )
    assert wait_end(d, 7).state is JobState.COMPLETED
    nodes = ",".join(dict.fromkeys(p.node for p in placement))
    assert read(launched.stdout_path) == f"[{expected}] {nodes} 7 PCI_BUS_ID\n"


def test_job_env_is_built_afresh_never_the_servers(
    tmp_path: Path, mode: LocalIsolation | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's own variables over a clean base (HOME, PATH, USER...): nothing of the
    server's environment, not even what looks harmless (its virtualenv on PATH was)."""
    monkeypatch.setenv("GPUCENTER_DATABASE_URL", "postgresql://secret")
    monkeypatch.setenv("SOME_API_TOKEN", "t0k3n")
    monkeypatch.setenv("HARMLESS", "yes")
    monkeypatch.setenv("PATH", "/srv/venv/bin:" + os.environ.get("PATH", ""))
    d = LocalDispatcher(tmp_path / "logs", isolation=mode)
    launched = d.submit(
        request(8, "env | sort", env={"MY_SETTING": "42", "GPUCENTER_X": "1"}, workdir=None)
    )
    assert wait_end(d, 8).state is JobState.COMPLETED
    env = dict(line.split("=", 1) for line in read(launched.stdout_path).splitlines())
    assert env["MY_SETTING"] == "42"
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["HOME"] == str(Path(launched.stdout_path).parent)  # the run's directory
    assert "HARMLESS" not in env and "SOME_API_TOKEN" not in env and "GPUCENTER_X" not in env
    assert {k for k in env if k.startswith("GPUCENTER_")} == {"GPUCENTER_JOB_ID", "GPUCENTER_NODES"}


def test_a_slot_outside_the_index_map_is_refused(tmp_path: Path) -> None:
    d = LocalDispatcher(tmp_path, gpu_index_map={"local": [0, 1]})
    with pytest.raises(DispatchError, match="no GPU slot 2"):
        d.submit(request(9, "true", placement=(NodeGpus("local", (2,)),)))
    assert d.running_job_ids() == frozenset()


def test_a_nonzero_exit_fails_and_says_so_in_the_err_file(dispatcher: LocalDispatcher) -> None:
    launched = dispatcher.submit(request(2, "exit 3"))

    change = wait_end(dispatcher, 2)

    assert change.state is JobState.FAILED
    assert change.exit_code == 3
    assert "exit code 3" in change.detail
    assert "gpucenter: job failed: exit code 3" in read(launched.stderr_path)


def test_a_missing_command_fails_with_command_not_found(dispatcher: LocalDispatcher) -> None:
    launched = dispatcher.submit(request(3, "no-such-command-gpucenter-test"))

    change = wait_end(dispatcher, 3)

    assert change.state is JobState.FAILED
    assert change.exit_code == 127
    assert "command not found" in read(launched.stderr_path)


def test_a_job_killed_by_a_signal_fails_naming_the_signal(dispatcher: LocalDispatcher) -> None:
    dispatcher.submit(request(4, "kill -SEGV $$"))

    change = wait_end(dispatcher, 4)

    assert change.state is JobState.FAILED
    assert "SIGSEGV" in change.detail
    assert change.exit_code == 128 + 11


@pytest.mark.parametrize("command", ["sleep 30", "sleep 30 & sleep 30"])
def test_time_limit_kills_the_whole_group(dispatcher: LocalDispatcher, command: str) -> None:
    launched = dispatcher.submit(request(5, command, time_limit_s=1))
    pgid = int(launched.external_id)

    change = wait_end(dispatcher, 5)

    assert change.state is JobState.TIMEOUT
    assert "time limit of 1 s exceeded" in change.detail
    assert group_gone(pgid)  # reported only once nothing of it is left
    assert "gpucenter: job killed: time limit of 1 s exceeded" in read(launched.stderr_path)


def test_time_limit_follows_the_given_clock(tmp_path: Path, mode: LocalIsolation | None) -> None:
    clock = ManualClock(1000.0)
    d = LocalDispatcher(tmp_path, clock=clock, kill_grace_s=0.5, isolation=mode)
    launched = d.submit(request(6, "sleep 30", time_limit_s=2))
    assert launched.started_at == 1000.0
    clock.advance(2)
    assert d.poll() == []  # at the limit, not over it
    assert d.running_job_ids() == frozenset({JobId(6)})
    clock.advance(0.5)

    change = wait_end(d, 6)

    assert change.state is JobState.TIMEOUT
    assert change.at == 1002.5


def test_a_sandbox_whose_outer_bwrap_died_before_its_status_is_still_killed(
    tmp_path: Path,
) -> None:
    """The race CI once met: the time limit's SIGTERM reached bwrap's outer process after it
    started the namespace and before it wrote the namespace's pid to the status file. The
    namespace's PID 1 ignores SIGTERM (an init does), so the job lives on in the group with
    no status to find it by; SIGKILL to the group after the grace period must still end it.
    Staged here: a job that ignores SIGTERM, its status file emptied, its outer bwrap gone."""
    d = LocalDispatcher(tmp_path, kill_grace_s=0.3, isolation=sandbox_isolation())
    launched = d.submit(request(12, "trap '' TERM; sleep 30", time_limit_s=60))
    pgid = int(launched.external_id)
    status_file = next((tmp_path / "spool").glob("*.json"))
    eventually(lambda: status_file.read_text().strip() != "", "bwrap to write its status")
    status_file.write_text("")  # as if bwrap died before writing it
    os.kill(pgid, signal.SIGKILL)  # the outer bwrap only (the group leader)
    d.cancel(JobId(12))

    change = wait_end(d, 12)

    assert change.state is JobState.CANCELLED
    assert group_gone(pgid)


def test_leftover_background_children_are_killed_when_the_leader_exits(
    dispatcher: LocalDispatcher,
) -> None:
    launched = dispatcher.submit(request(10, "sleep 30 & echo started"))

    change = wait_end(dispatcher, 10)

    assert change.state is JobState.COMPLETED
    assert group_gone(int(launched.external_id))


def test_cancel_ends_the_job_without_blocking(dispatcher: LocalDispatcher) -> None:
    launched = dispatcher.submit(request(11, "sleep 30 & sleep 30"))
    pgid = int(launched.external_id)

    dispatcher.cancel(JobId(11))
    change = wait_end(dispatcher, 11)

    assert change.state is JobState.CANCELLED
    assert group_gone(pgid)
    assert "gpucenter: job killed: cancelled" in read(launched.stderr_path)


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_period(
    dispatcher: LocalDispatcher,
) -> None:
    launched = dispatcher.submit(request(12, "trap '' TERM; echo ready; sleep 30"))
    eventually(lambda: "ready" in read(launched.stdout_path), "the trap to be set")

    started = time.monotonic()
    dispatcher.cancel(JobId(12))
    assert time.monotonic() - started < 0.25  # the caller does not wait for the grace period
    assert dispatcher.poll() == []  # still alive: SIGTERM is ignored
    change = wait_end(dispatcher, 12)

    assert time.monotonic() - started >= 0.5
    assert change.state is JobState.CANCELLED
    assert "SIGKILL" in change.detail
    assert group_gone(int(launched.external_id))


def test_cancel_of_unknown_or_finished_jobs_is_a_no_op(dispatcher: LocalDispatcher) -> None:
    dispatcher.cancel(JobId(404))
    dispatcher.submit(request(13, "true"))
    assert dispatcher.wait_for_exit(JobId(13), DEADLINE_S)
    dispatcher.cancel(JobId(13))
    assert wait_end(dispatcher, 13).state is JobState.COMPLETED
    dispatcher.cancel(JobId(13))
    assert dispatcher.poll() == []


def test_a_job_id_cannot_run_twice(dispatcher: LocalDispatcher) -> None:
    dispatcher.submit(request(14, "sleep 30"))
    with pytest.raises(DispatchError, match="already running"):
        dispatcher.submit(request(14, "sleep 30"))


def test_an_invalid_workdir_is_refused(dispatcher: LocalDispatcher, tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    for workdir in (str(tmp_path / "missing"), str(a_file)):
        with pytest.raises(DispatchError, match="working directory"):
            dispatcher.submit(request(15, "true", workdir=workdir))
    assert dispatcher.running_job_ids() == frozenset()


def test_a_missing_shell_is_a_dispatch_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dispatcher = LocalDispatcher(tmp_path / "logs")  # unsandboxed: the server's own shell
    monkeypatch.setattr(local, "SHELL", str(tmp_path / "no-bash"))
    with pytest.raises(DispatchError, match="cannot start"):
        dispatcher.submit(request(16, "true"))
    assert dispatcher.running_job_ids() == frozenset()


def test_shutdown_kills_every_group(tmp_path: Path, mode: LocalIsolation | None) -> None:
    d = LocalDispatcher(tmp_path, kill_grace_s=0.2, isolation=mode)
    groups = [
        int(d.submit(request(20 + i, cmd)).external_id)
        for i, cmd in enumerate(["sleep 30", "trap '' TERM; sleep 30 & sleep 30"])
    ]
    assert d.running_job_ids() == frozenset({JobId(20), JobId(21)})

    d.shutdown()

    assert d.running_job_ids() == frozenset()
    assert all(group_gone(pgid) for pgid in groups)


def test_gpu_utilisation_is_measured_on_real_gpu_nodes_and_reported_at_the_end(
    tmp_path: Path,
) -> None:
    """NVML is faked: GPU i reads 40 + 10*i %. The job holds GPUs 1 and 2 (mean 55 %)."""
    from gpucenter.dispatch.gpuutil import UtilisationSampler

    sampler = UtilisationSampler(lambda index: 40.0 + 10.0 * index)
    measured = LocalDispatcher(
        tmp_path / "m", sampler=sampler, measured_nodes=frozenset({"local"}), sample_every_s=0
    )
    unmeasured = LocalDispatcher(tmp_path / "u", sampler=UtilisationSampler(lambda i: 99.0))
    try:
        gpus = (NodeGpus("local", (1, 2)),)
        measured.submit(request(1, "sleep 0.3", placement=gpus))
        unmeasured.submit(request(2, "sleep 0.3", placement=gpus))
        ended = wait_end(measured, 1)
        assert ended.gpu_util is not None and ended.measured_by == "nvml"
        mean, samples = ended.gpu_util
        assert mean == 55.0 and samples >= 2
        assert wait_end(unmeasured, 2).gpu_util is None  # virtual GPUs: nothing to measure
    finally:
        measured.shutdown()
        unmeasured.shutdown()
