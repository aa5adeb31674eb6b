"""Re-adopting running jobs after a server restart or failover, without restarting them.

In both single-user modes (see test_local): unsandboxed runs are recognised by their
environment marker, sandboxed ones only by `sandbox_is_ours` (the status file bwrap wrote).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpucenter.dispatch.local.dispatcher import CLAIMED_ELSEWHERE, LocalDispatcher
from gpucenter.dispatch.local.isolation import LocalIsolation
from gpucenter.dispatch.local.process_groups import group_gone
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState
from tests.dispatch.test_local import eventually, read, request, wait_end


def gone(pgid: int) -> bool:
    """The first dispatcher's exited wrappers stay zombies of this test process: reap them."""
    return group_gone(pgid)


@pytest.fixture
def pair(tmp_path: Path, mode: LocalIsolation | None):
    first = LocalDispatcher(tmp_path, kill_grace_s=0.5, isolation=mode)
    second = LocalDispatcher(tmp_path, kill_grace_s=0.5, isolation=mode)
    yield first, second
    second.shutdown()
    first.shutdown()


def test_an_adopted_job_keeps_running_and_reports_its_exit_code(pair) -> None:
    first, second = pair
    launched = first.submit(request(1, "echo start; sleep 2; echo end; exit 7"))
    first.detach()
    assert second.adopt(
        JobId(1), launched.external_id, launched.started_at, 60, launched.stderr_path
    )
    change = wait_end(second, 1)
    assert change.state is JobState.FAILED and change.exit_code == 7
    assert read(launched.stdout_path) == "start\nend\n"  # ran once, never restarted


def test_an_adopted_job_that_completes_is_completed(pair) -> None:
    first, second = pair
    launched = first.submit(request(2, "sleep 0.5"))
    first.detach()
    second.adopt(JobId(2), launched.external_id, launched.started_at, 60, launched.stderr_path)
    assert wait_end(second, 2).state is JobState.COMPLETED


def test_a_job_that_ended_while_nobody_watched_reports_its_status(pair) -> None:
    first, second = pair
    launched = first.submit(request(3, "exit 4"))
    first.detach()
    eventually(lambda: gone(int(launched.external_id)), "the job to end")
    second.adopt(JobId(3), launched.external_id, launched.started_at, 60, launched.stderr_path)
    change = wait_end(second, 3)
    assert (change.state, change.exit_code) == (JobState.FAILED, 4)


def test_the_time_limit_still_holds_after_adoption(pair) -> None:
    first, second = pair
    launched = first.submit(request(4, "sleep 60", time_limit_s=1))
    first.detach()
    second.adopt(JobId(4), launched.external_id, launched.started_at, 1, launched.stderr_path)
    change = wait_end(second, 4)
    assert change.state is JobState.TIMEOUT
    eventually(lambda: gone(int(launched.external_id)), "the group to be reaped")


def test_cancel_reaches_an_adopted_job(pair) -> None:
    first, second = pair
    launched = first.submit(request(5, "sleep 60"))
    first.detach()
    second.adopt(JobId(5), launched.external_id, launched.started_at, 60, launched.stderr_path)
    second.cancel(JobId(5))
    assert wait_end(second, 5).state is JobState.CANCELLED
    eventually(lambda: gone(int(launched.external_id)), "the group to be reaped")


def test_a_reused_pid_is_never_signalled(pair, tmp_path: Path) -> None:
    _, second = pair
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
    )
    try:
        adopted = second.adopt(JobId(6), str(stranger.pid), time.time(), 1, None)
        assert adopted is False
        change = wait_end(second, 6)
        assert change.state is JobState.FAILED and "unknown" in change.detail
        time.sleep(1.2)
        second.poll()
        assert stranger.poll() is None  # still alive: not ours to kill
    finally:
        stranger.kill()
        stranger.wait()


def test_a_start_the_database_never_recorded_is_adopted_not_repeated(pair) -> None:
    """The server died between starting a job and committing RUNNING: the job is still
    PENDING, so the next leader asks to start the same run again. It gets the running process
    back instead of a second one."""
    first, second = pair
    launched = first.submit(request(5, "echo start; sleep 1; echo end"))
    first.detach()
    again = second.submit(request(5, "echo start; sleep 1; echo end"))
    assert again.external_id == launched.external_id
    assert abs(again.started_at - launched.started_at) < 2
    assert wait_end(second, 5).state is JobState.COMPLETED
    assert read(launched.stdout_path) == "start\nend\n"  # one run, not two


def test_an_unrecorded_start_that_already_ended_reports_its_status(pair) -> None:
    first, second = pair
    launched = first.submit(request(6, "echo once; exit 3"))
    first.detach()
    eventually(lambda: gone(int(launched.external_id)), "the job to end")
    second.submit(request(6, "echo once; exit 3"))
    change = wait_end(second, 6)
    assert (change.state, change.exit_code) == (JobState.FAILED, 3)
    assert read(launched.stdout_path) == "once\n"


def test_a_requeued_job_starts_afresh_as_its_next_run(pair) -> None:
    first, _ = pair
    from dataclasses import replace

    first.submit(request(7, "echo run"))
    assert wait_end(first, 7).state is JobState.COMPLETED
    again = first.submit(replace(request(7, "echo run"), run=2))
    assert wait_end(first, 7).state is JobState.COMPLETED
    assert read(again.stdout_path) == "run\n"


def test_a_run_is_claimed_by_its_process_so_a_late_second_start_runs_nothing(
    pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server paused after it checked for the run's marker and before it forked (a deposed
    leader waking up) starts the same run after another server did: its process finds the
    run claimed and exits without running the command, and the late server adopts the run
    that holds the claim; the first run's status stays. Sandboxed or not: the claim is the
    starting process's first act (running.WRAPPER, sandbox.start_sandboxed)."""
    first, second = pair

    def starts() -> str:  # each start writes in its run directory (all a sandbox can write)
        return "".join(p.read_text() for p in first.jobs_root.glob("job-9.run-1*/started"))

    command = "echo started >> started; sleep 0.3; exit 3"
    launched = first.submit(request(9, command))
    eventually(lambda: starts() != "", "the first start")
    monkeypatch.setattr(Path, "exists", lambda self: False)  # it checked before the claim
    late = second.submit(request(9, command))
    monkeypatch.undo()
    # The claimed run, adopted (a sandbox not yet proven ours by its status is watched by its
    # status file only, under group -1: never signalled).
    assert late.external_id in (launched.external_id, "-1")
    late_change = wait_end(second, 9)
    assert late_change.exit_code != CLAIMED_ELSEWHERE
    change = wait_end(first, 9)
    assert (change.state, change.exit_code) == (JobState.FAILED, 3)  # the first run's own end
    assert late_change.state is JobState.FAILED  # the held run's end (its code, if proven)
    assert starts() == "started\n"  # the command ran once


def test_a_forged_job_id_marker_is_not_proof_in_a_sandbox(tmp_path: Path) -> None:
    """Any process can carry GPUCENTER_JOB_ID=<id> in its environment: a sandboxed site
    adopts only what `sandbox_is_ours` proves (its status file), so such a process is never
    taken for the job, nor signalled. (The unsandboxed mode trusts the marker: there every
    job is the server's own user anyway.)"""
    from tests.dispatch.builders import sandbox_isolation

    second = LocalDispatcher(tmp_path, kill_grace_s=0.2, isolation=sandbox_isolation())
    forger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"],
        env={"GPUCENTER_JOB_ID": "6"},
        start_new_session=True,
    )
    try:
        assert second.adopt(JobId(6), str(forger.pid), time.time(), 1, None) is False
        change = wait_end(second, 6)
        assert change.state is JobState.FAILED and "unknown" in change.detail
        time.sleep(0.5)
        second.poll()
        assert forger.poll() is None  # never signalled
    finally:
        second.shutdown()
        forger.kill()
        forger.wait()
