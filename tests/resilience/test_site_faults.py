"""A site that errors or times out: jobs stay queued with a visible reason, the control plane
backs off and retries, and work resumes when the site is back."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gpucenter.config import Settings
from gpucenter.dispatch.base import Launched, LaunchRequest, SiteUnavailable, StateChange
from gpucenter.dispatch.local.dispatcher import LocalDispatcher
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState
from gpucenter.persistence.tables import JobRow
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.scheduling.cycle import run_pass
from tests.factories import make_context, seed_centre, wait_until


class FlakySite:
    """The local dispatcher behind a switch: while `down`, every call fails like a dead site."""

    def __init__(self, inner: LocalDispatcher) -> None:
        self.inner = inner
        self.down = False
        self.calls_while_down = 0

    def _check(self) -> None:
        if self.down:
            self.calls_while_down += 1
            raise SiteUnavailable("connection to the site timed out after 10 s")

    def submit(self, request: LaunchRequest) -> Launched:
        self._check()
        return self.inner.submit(request)

    def cancel(self, job_id: JobId) -> None:
        self._check()
        self.inner.cancel(job_id)

    def poll(self) -> Sequence[StateChange]:
        self._check()
        return self.inner.poll()

    def shutdown(self) -> None:
        self.inner.shutdown()


@pytest.fixture
def flaky(settings: Settings):
    ctx = make_context(settings)
    assert isinstance(ctx.dispatcher, LocalDispatcher)
    site = FlakySite(ctx.dispatcher)
    ctx.dispatcher = site
    yield ctx, site, seed_centre(ctx)
    site.shutdown()
    ctx.engine.dispose()


def _row(ctx, job_id: int) -> JobRow:
    with ctx.sessions.begin() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        return row


def test_jobs_wait_visibly_while_the_site_is_down_and_run_when_it_is_back(flaky) -> None:
    ctx, site, centre = flaky
    site.down = True
    job_id = jobs.submit(
        ctx, centre.alice, jobs.SubmitRequest(project="alpha", command="echo back")
    ).id
    run_pass(ctx)
    waiting = _row(ctx, job_id)
    assert waiting.state == JobState.PENDING
    assert waiting.reason == "SiteUnavailable" and "timed out" in waiting.reason_detail
    assert "retrying at" in waiting.reason_detail

    attempts = site.calls_while_down
    for _ in range(5):  # passes inside the backoff window do not hammer the site
        run_pass(ctx)
    assert site.calls_while_down == attempts

    site.down = False

    def completed() -> bool:
        run_pass(ctx)
        return _row(ctx, job_id).state == JobState.COMPLETED

    wait_until(completed, timeout=30, step=0.2)
    assert ctx.site_health.failures == 0


def test_backoff_grows_and_is_capped() -> None:
    from datetime import UTC, datetime, timedelta

    from gpucenter.services.sites.health import MAX_BACKOFF_S, SiteHealth

    health = SiteHealth()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    delays = []
    for _ in range(10):
        health.failed(now, "down")
        assert health.retry_at is not None
        delays.append((health.retry_at - now).total_seconds())
    assert delays[:4] == [1, 2, 4, 8] and max(delays) == MAX_BACKOFF_S
    assert health.blocked(now) and not health.blocked(now + timedelta(seconds=61))
    health.succeeded()
    assert not health.blocked(now) and health.failures == 0
