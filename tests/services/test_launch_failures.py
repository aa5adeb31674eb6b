"""Defence in depth (issue 17 item 5): a job that cannot be launched, for whatever reason,
ends FAILED with the reason shown to its owner, and never stops the pass for the others.

It once did: a NUL byte in a job's command made the local dispatcher raise ValueError deep
in Popen, every pass failed from then on, and nobody's job started. The boundary now refuses
such input, but the scheduler must not depend on it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import update

from gpucenter.config import Settings
from gpucenter.dispatch.base import Launched, LaunchRequest
from gpucenter.dispatch.local.dispatcher import LocalDispatcher
from gpucenter.domain.jobs import JobState
from gpucenter.persistence.tables import JobRow
from gpucenter.services.context import AppContext
from gpucenter.services.jobs.manage import SubmitRequest, submit
from gpucenter.services.scheduling.cycle import run_pass
from tests.factories import Centre, make_context, seed_centre


@pytest.fixture
def centre(settings: Settings) -> Iterator[tuple[AppContext, Centre]]:
    ctx = make_context(settings)
    yield ctx, seed_centre(ctx)
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def _state(ctx: AppContext, job_id: int) -> tuple[str, str]:
    with ctx.sessions() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        return row.state, row.reason_detail


def test_a_nul_byte_fails_its_job_and_the_other_users_job_starts(
    centre: tuple[AppContext, Centre],
) -> None:
    """Poisoned jobs and another user's job in one pass: only the poisoned ones fail."""
    ctx, c = centre
    if ctx.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL cannot store a NUL byte in text: such a row cannot exist there")
    in_command = submit(ctx, c.alice, SubmitRequest(project="alpha", command="true")).id
    in_env = submit(ctx, c.alice, SubmitRequest(project="alpha", command="true")).id
    other = submit(ctx, c.bob, SubmitRequest(project="beta", command="sleep 30")).id
    # Past the boundary's checks, as a row written by an older server (or by hand) would be.
    with ctx.sessions.begin() as s:
        s.execute(update(JobRow).where(JobRow.id == in_command).values(command="echo \0 boom"))
        s.execute(update(JobRow).where(JobRow.id == in_env).values(env={"X": "a\0b"}))
    run_pass(ctx)
    for poisoned in (in_command, in_env):
        state, detail = _state(ctx, poisoned)
        assert state == JobState.FAILED.value
        assert detail.startswith("could not start:") and "NUL" in detail
    assert _state(ctx, other)[0] == JobState.RUNNING.value


class _Exploding(LocalDispatcher):
    """A dispatcher that chokes on one job with an error no dispatcher is meant to raise."""

    poisoned: int = -1

    def submit(self, request: LaunchRequest) -> Launched:
        if int(request.job_id) == self.poisoned:
            raise ValueError("embedded null byte")
        return super().submit(request)


def test_any_launch_error_fails_only_that_job(settings: Settings) -> None:
    ctx = make_context(settings)
    try:
        c = seed_centre(ctx)
        exploding = _Exploding(settings.log_dir, kill_grace_s=0.5)
        ctx.dispatcher.shutdown()
        ctx.dispatcher = exploding
        poisoned = submit(ctx, c.alice, SubmitRequest(project="alpha", command="true")).id
        other = submit(ctx, c.bob, SubmitRequest(project="beta", command="sleep 30")).id
        exploding.poisoned = poisoned
        run_pass(ctx)  # does not raise
        state, detail = _state(ctx, poisoned)
        assert state == JobState.FAILED.value
        assert detail == "could not start: internal error (ValueError: embedded null byte)"
        assert _state(ctx, other)[0] == JobState.RUNNING.value
        run_pass(ctx)  # and the next pass is fine too
    finally:
        ctx.dispatcher.shutdown()
        ctx.engine.dispose()
