"""End to end through services, the core and the local dispatcher, with real processes.

Runs on SQLite and PostgreSQL. The scheduler loop is driven by calling `run_pass` directly.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gpucenter.config import Settings
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState
from gpucenter.persistence.tables import JobRow, JobRunRow, LedgerEntryRow
from gpucenter.services.context import AppContext
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.scheduling.cycle import run_pass
from tests.factories import Centre, make_context, seed_centre, wait_until


@pytest.fixture
def ctx(settings: Settings):
    context = make_context(settings)
    yield context
    context.dispatcher.shutdown()
    context.engine.dispose()


@pytest.fixture
def centre(ctx: AppContext) -> Centre:
    return seed_centre(ctx)


def _submit(ctx: AppContext, centre: Centre, command: str, gpus: int = 1, **kw) -> int:
    req = jobs.SubmitRequest(project="alpha", command=command, gpus_per_node=gpus, **kw)
    return jobs.submit(ctx, centre.alice, req).id


def _state(ctx: AppContext, job_id: int) -> JobRow:
    with ctx.sessions.begin() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        return row


def _run_until(ctx: AppContext, job_id: int, states: set[JobState], timeout: float = 20) -> JobRow:
    def done() -> bool:
        run_pass(ctx)
        return JobState(_state(ctx, job_id).state) in states

    wait_until(done, timeout=timeout, step=0.1)
    return _state(ctx, job_id)


def test_job_runs_as_a_process_and_sees_only_its_gpus(ctx: AppContext, centre: Centre) -> None:
    job_id = _submit(ctx, centre, "echo visible=$CUDA_VISIBLE_DEVICES", gpus=2)
    row = _run_until(ctx, job_id, {JobState.COMPLETED})
    gpus = [g for part in row.placement or [] for g in part["gpus"]]
    assert len(gpus) == 2
    assert Path(row.stdout_path or "").read_text().strip() == "visible=" + ",".join(
        str(g) for g in gpus
    )
    chunk, _, finished = jobs.read_log(ctx, centre.alice, job_id)
    assert chunk.decode().startswith("visible=") and finished
    assert row.exit_code == 0


def test_second_job_waits_with_a_reason_then_starts_when_the_first_ends(
    ctx: AppContext, centre: Centre
) -> None:
    first = _submit(ctx, centre, "sleep 1.5", gpus=3)
    second = _submit(ctx, centre, "echo second", gpus=2)
    run_pass(ctx)
    assert _state(ctx, first).state == JobState.RUNNING
    waiting = _state(ctx, second)
    assert waiting.state == JobState.PENDING
    assert waiting.reason == "Resources"
    assert "GPU" in waiting.reason_detail
    done = _run_until(ctx, second, {JobState.COMPLETED})
    first_row = _state(ctx, first)
    assert first_row.ended_at is not None and done.started_at is not None
    assert done.started_at >= first_row.ended_at


def test_job_over_its_time_limit_is_killed_and_marked_timeout(
    ctx: AppContext, centre: Centre
) -> None:
    job_id = _submit(ctx, centre, "sleep 60 & sleep 60", time_limit_s=1)
    row = _run_until(ctx, job_id, {JobState.TIMEOUT})
    pgid = int(row.external_id or 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
    assert "time limit" in row.reason_detail


def test_cancelled_running_job_leaves_no_process_group(ctx: AppContext, centre: Centre) -> None:
    job_id = _submit(ctx, centre, "trap '' TERM; sleep 60")
    row = _run_until(ctx, job_id, {JobState.RUNNING})
    jobs.cancel(ctx, centre.alice, job_id)
    row = _run_until(ctx, job_id, {JobState.CANCELLED})
    with pytest.raises(ProcessLookupError):
        os.killpg(int(row.external_id or 0), 0)


def test_cancelled_pending_job_never_starts(ctx: AppContext, centre: Centre) -> None:
    job_id = _submit(ctx, centre, "echo never")
    jobs.cancel(ctx, centre.alice, job_id)
    run_pass(ctx)
    row = _state(ctx, job_id)
    assert row.state == JobState.CANCELLED and row.started_at is None


def test_missing_command_fails_with_the_error_in_its_log(ctx: AppContext, centre: Centre) -> None:
    job_id = _submit(ctx, centre, "no-such-program-gpucenter --flag")
    row = _run_until(ctx, job_id, {JobState.FAILED})
    chunk, _, _ = jobs.read_log(ctx, centre.alice, job_id, stream="stderr")
    assert "not found" in chunk.decode()
    assert row.exit_code == 127


def test_usage_is_charged_once_as_gpu_seconds(ctx: AppContext, centre: Centre) -> None:
    job_id = _submit(ctx, centre, "sleep 1", gpus=2)
    row = _run_until(ctx, job_id, {JobState.COMPLETED})
    for _ in range(3):
        run_pass(ctx)
    with ctx.sessions.begin() as s:
        entries = s.scalars(select(LedgerEntryRow).where(LedgerEntryRow.job_id == job_id)).all()
    assert len(entries) == 1
    assert row.started_at is not None and row.ended_at is not None
    elapsed = (row.ended_at - row.started_at).total_seconds()
    assert entries[0].gpu_seconds == pytest.approx(2 * elapsed, rel=1e-6)
    assert 2 * 0.9 <= entries[0].gpu_seconds <= 2 * 5


def test_other_tenants_cannot_see_or_cancel_a_job(ctx: AppContext, centre: Centre) -> None:
    job_id = _submit(ctx, centre, "echo private")
    from gpucenter.domain.errors import NotFound

    with pytest.raises(NotFound):
        jobs.get_visible(ctx, centre.bob, job_id)
    with pytest.raises(NotFound):
        jobs.cancel(ctx, centre.bob, job_id)
    with pytest.raises(NotFound):
        jobs.read_log(ctx, centre.bob, job_id)
    assert [r.id for r in jobs.list_visible(ctx, centre.bob)] == []


BAD_INPUT = {
    "unknown project": (dict(project="nope"), "project"),
    "someone else's project": (dict(project="beta"), "project"),
    "zero GPUs": (dict(gpus_per_node=0), "gpus_per_node"),
    "negative GPUs": (dict(gpus_per_node=-2), "gpus_per_node"),
    "more GPUs than any node has": (dict(gpus_per_node=5), "gpus_per_node"),
    "more nodes than the site has": (dict(nodes=2), "nodes"),
    "empty command": (dict(command="   "), "command"),
    "unknown GPU type": (dict(gpu_type="b200"), "gpu_type"),
    "zero time limit": (dict(time_limit_s=0), "time_limit"),
    "relative workdir": (dict(workdir="relative/dir"), "workdir"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_names_the_field_and_writes_nothing(
    ctx: AppContext, centre: Centre, case: str
) -> None:
    overrides, field = BAD_INPUT[case]
    fields = dict(project="alpha", command="echo hi", gpus_per_node=1) | overrides
    with pytest.raises(ValidationError) as info:
        jobs.submit(ctx, centre.alice, jobs.SubmitRequest(**fields))
    assert info.value.field == field
    with ctx.sessions.begin() as s:
        assert s.scalar(select(func.count()).select_from(JobRow)) == 0


def test_a_restarted_server_re_adopts_a_running_job_without_restarting_it(
    settings: Settings, ctx: AppContext, centre: Centre
) -> None:
    job_id = _submit(ctx, centre, "echo started; sleep 1.5; echo finished", gpus=4)
    running = _run_until(ctx, job_id, {JobState.RUNNING})
    ctx.dispatcher.detach()  # the old server process is gone; its job is not
    restarted = make_context(settings)
    try:
        from gpucenter.services.scheduling.cycle import recover_after_restart

        assert recover_after_restart(restarted) == 1
        done = _run_until(restarted, job_id, {JobState.COMPLETED})
        assert done.runs == 1 and done.started_at == running.started_at
        assert Path(done.stdout_path or "").read_text() == "started\nfinished\n"
    finally:
        restarted.dispatcher.shutdown()
        restarted.engine.dispose()


def test_a_job_that_died_while_the_server_was_down_is_failed_and_frees_its_gpus(
    settings: Settings, ctx: AppContext, centre: Centre
) -> None:
    job_id = _submit(ctx, centre, "sleep 30", gpus=4)
    _run_until(ctx, job_id, {JobState.RUNNING})
    ctx.dispatcher.shutdown()  # killed while nobody watched
    restarted = make_context(settings)
    try:
        from gpucenter.services.scheduling.cycle import recover_after_restart

        recover_after_restart(restarted)
        row = _run_until(restarted, job_id, {JobState.FAILED, JobState.CANCELLED})
        assert row.ended_at is not None
        follow_up = _submit(restarted, centre, "echo after", gpus=4)
        assert _run_until(restarted, follow_up, {JobState.COMPLETED}).exit_code == 0
    finally:
        restarted.dispatcher.shutdown()
        restarted.engine.dispose()


def test_the_scheduler_loop_thread_runs_jobs_by_itself(ctx: AppContext, centre: Centre) -> None:
    from gpucenter.services.scheduling.loop import SchedulerLoop

    loop = SchedulerLoop(ctx, interval_s=0.1)
    loop.start()
    try:
        job_id = _submit(ctx, centre, "echo looped")
        loop.poke()
        wait_until(lambda: _state(ctx, job_id).state == JobState.COMPLETED, timeout=20)
    finally:
        loop.stop()
    assert loop.passes > 0


def test_opportunistic_work_is_preempted_requeued_and_charged_per_run(
    ctx: AppContext, centre: Centre
) -> None:
    scavenger = _submit(ctx, centre, "sleep 60", gpus=4, qos="opportunistic")
    _run_until(ctx, scavenger, {JobState.RUNNING})
    entitled = jobs.submit(
        ctx,
        centre.bob,
        jobs.SubmitRequest(project="beta", command="echo entitled", gpus_per_node=4),
    ).id
    done = _run_until(ctx, entitled, {JobState.COMPLETED}, timeout=30)
    again = _state(ctx, scavenger)
    assert again.runs >= 1
    assert f"job {entitled}" in again.reason_detail or again.state == JobState.RUNNING
    assert done.started_at is not None
    with ctx.sessions.begin() as s:
        sources = s.scalars(
            select(LedgerEntryRow.source).where(LedgerEntryRow.job_id == scavenger)
        ).all()
    assert sources == [f"job:{scavenger}:run:1"]
    _run_until(ctx, scavenger, {JobState.RUNNING})  # its second run
    with ctx.sessions.begin() as s:
        runs = s.execute(
            select(JobRunRow.run, JobRunRow.external_id)
            .where(JobRunRow.job_id == scavenger)
            .order_by(JobRunRow.run)
        ).all()
        current = s.get_one(JobRow, scavenger).external_id
    # Each run is recorded with the site's id it had (the Slurm ingest tells runs by it).
    assert [r for r, _ in runs] == [1, 2]
    assert runs[1][1] == current and runs[0][1] and runs[0][1] != current
    jobs.cancel(ctx, centre.alice, scavenger)


def test_an_awards_concurrency_cap_holds_jobs_with_the_quota_reason(
    ctx: AppContext, centre: Centre
) -> None:
    from gpucenter.persistence.tables import AllocationRow

    with ctx.sessions.begin() as s:
        for alloc in s.scalars(select(AllocationRow)):
            alloc.gpu_type = "vgpu"
            alloc.max_concurrent_gpus = 2
    first = _submit(ctx, centre, "sleep 30", gpus=2)
    second = _submit(ctx, centre, "echo later", gpus=2)
    _run_until(ctx, first, {JobState.RUNNING})
    waiting = _state(ctx, second)
    assert waiting.state == JobState.PENDING and waiting.reason == "QuotaLimit"
    jobs.cancel(ctx, centre.alice, first)
    assert _run_until(ctx, second, {JobState.COMPLETED}).exit_code == 0


def test_a_suspended_allocation_takes_no_new_jobs(ctx: AppContext, centre: Centre) -> None:
    from gpucenter.persistence.tables import AllocationRow

    with ctx.sessions.begin() as s:
        for alloc in s.scalars(select(AllocationRow)):
            alloc.state = "suspended"
    with pytest.raises(ValidationError) as info:
        _submit(ctx, centre, "echo no")
    assert info.value.field == "project" and "no active allocation" in str(info.value)


class _Died(BaseException):
    """The server process dying right after the dispatcher started a job."""


def test_a_start_the_server_died_before_recording_runs_once(
    settings: Settings, ctx: AppContext, centre: Centre, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between the dispatcher's start and the commit of RUNNING: the job is still
    PENDING in the database, and the next leader must adopt the process, not start another."""
    from gpucenter.dispatch.local.dispatcher import LocalDispatcher
    from gpucenter.services.scheduling.cycle import recover_after_restart

    real_submit = LocalDispatcher.submit
    died = []

    def submit_then_die(self, request):  # type: ignore[no-untyped-def]
        launched = real_submit(self, request)
        if not died:
            died.append(launched)
            raise _Died
        return launched

    monkeypatch.setattr(LocalDispatcher, "submit", submit_then_die)
    job_id = _submit(ctx, centre, "echo started; sleep 1.5; echo finished", gpus=4)
    with pytest.raises(_Died):
        run_pass(ctx)
    assert _state(ctx, job_id).state == JobState.PENDING.value  # nothing was committed
    ctx.dispatcher.detach()
    restarted = make_context(settings)
    try:
        recover_after_restart(restarted)
        done = _run_until(restarted, job_id, {JobState.COMPLETED})
        assert done.runs == 1 and done.external_id == died[0].external_id
        assert Path(done.stdout_path or "").read_text() == "started\nfinished\n"  # once
    finally:
        restarted.dispatcher.shutdown()
        restarted.engine.dispose()


def test_measured_gpu_utilisation_is_kept_for_the_run_that_ended(
    ctx: AppContext, centre: Centre
) -> None:
    from gpucenter.dispatch.base import StateChange
    from gpucenter.persistence.tables_accounting import GpuUtilisationRow
    from gpucenter.services.scheduling.endings import apply_changes

    job_id = _submit(ctx, centre, "sleep 30", gpus=2)
    running = _run_until(ctx, job_id, {JobState.RUNNING})
    ended = StateChange(
        JobId(job_id), JobState.COMPLETED, time.time(), 0, gpu_util=(37.5, 4), measured_by="nvml"
    )
    assert apply_changes(ctx, [ended]) == 1
    assert apply_changes(ctx, [ended]) == 0  # reported twice: kept once
    with ctx.sessions.begin() as s:
        rows = s.scalars(select(GpuUtilisationRow).where(GpuUtilisationRow.job_id == job_id)).all()
        assert [(r.run, r.mean_util_pct, r.samples, r.measured_by) for r in rows] == [
            (running.runs, 37.5, 4, "nvml")
        ]
        assert rows[0].allocation_id == running.allocation_id
    ctx.dispatcher.cancel(JobId(job_id))
