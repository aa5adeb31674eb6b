"""One submit pipeline (issue 16, item 5): a check added to `pipeline.CHECKS` is enforced by
the FastAPI route (SQLite and PostgreSQL), by the fast path on its async connection
(PostgreSQL) and by the service every other caller uses, with the same problem+json, in
its place in the order. It fails if any path runs its own list instead of `CHECKS`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.domain.errors import ValidationError
from gpucenter.persistence.tables import JobRow
from gpucenter.services.context import AppContext
from gpucenter.services.jobs import manage, pipeline, templates
from gpucenter.services.jobs import submit as submitting
from gpucenter.services.jobs.pipeline import Step, Submission
from gpucenter.services.jobs.submission import JobForm
from tests.api.test_fast_submit import _bearer, _normalise
from tests.factories import Centre, make_context, seed_centre

PATH = "/api/v1/jobs"
MARKER = "forbidden-marker"
TEMPLATE = {
    "name": "steps",
    "title": "Count steps",
    "description": "Prints one line per step.",
    "fields": [{"name": "steps", "type": "int", "default": 3, "min": 1, "max": 20}],
    "job": {"command": "sh -c 'seq 1 $0' {steps}", "gpus_per_node": "1", "time": "5m"},
}


@pytest.fixture
def env(settings: Settings) -> Iterator[tuple[AppContext, Centre, TestClient]]:
    ctx = make_context(settings)
    centre = seed_centre(ctx)
    with ctx.sessions.begin() as s:
        templates.publish(s, TEMPLATE, ctx.now(), None)
    with TestClient(create_app(ctx, run_scheduler=False)) as client:
        yield ctx, centre, client
    ctx.engine.dispose()


def _no_marker(ctx: AppContext, sub: Submission) -> None:
    """The new check: a command containing the marker is refused."""
    if MARKER in sub.command:
        raise ValidationError("command", f"must not contain {MARKER!r} (a new rule)")


def _add_check(monkeypatch: pytest.MonkeyPatch, before: str | None) -> None:
    """Put the new check into the pipeline: at the end, or before the step named."""
    checks = list(pipeline.CHECKS)
    at = len(checks) if before is None else [s.name for s in checks].index(before)
    checks.insert(at, Step("no marker", _no_marker))
    monkeypatch.setattr(pipeline, "CHECKS", tuple(checks))


class Paths:
    """Which service functions answered. `fast`: what each `submit_async` call (the fast
    path on its async connection) did: "written", "refused", or None (handed to the
    general path); `general`: calls of `submit` (the route, or the fast path's hand-over)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fast: list[str | None] = []
        self.general = 0
        real_async: Callable[..., Any] = submitting.submit_async
        real_submit: Callable[..., Any] = submitting.submit

        async def counting_async(*args: Any, **kwargs: Any) -> Any:
            self.fast.append("refused")
            answer = await real_async(*args, **kwargs)
            self.fast[-1] = None if answer is None else "written"
            return answer

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.general += 1
            return real_submit(*args, **kwargs)

        monkeypatch.setattr(submitting, "submit_async", counting_async)
        monkeypatch.setattr(submitting, "submit", counting)  # the fast path's hand-over
        monkeypatch.setattr(manage, "submit", counting)  # the route's `jobs.submit`

    def reset(self) -> None:
        self.fast.clear()
        self.general = 0


def _jobs(ctx: AppContext) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(JobRow)) or 0)


def _answers(
    client: TestClient, requests: list[dict[str, Any]], ids: dict[int, int]
) -> list[tuple[Any, ...]]:
    return [_normalise(client.post(PATH, **req), ids) for req in requests]


@pytest.mark.parametrize("before", [None, "project, allocation, site, token"])
def test_a_check_added_to_the_pipeline_refuses_on_every_path(
    env, db_url: str, monkeypatch: pytest.MonkeyPatch, before: str | None
) -> None:
    ctx, centre, client = env
    _add_check(monkeypatch, before)
    paths = Paths(monkeypatch)
    alice = _bearer(centre.alice_token)
    bad = {"project": "alpha", "command": f"echo {MARKER}", "gpus_per_node": 1}
    requests: list[dict[str, Any]] = [
        {"json": bad, "headers": alice},
        {"json": bad, "headers": alice | {"Idempotency-Key": "m1"}},
        {"json": {"project": "alpha", "script": f"#GPUCENTER --time 5m\n{MARKER}\n"},
         "headers": alice},
        {"json": bad | {"array": "0-2"}, "headers": alice},
        # Both the new rule and the project check refuse: the one earlier in the list answers.
        {"json": bad | {"project": "nope"}, "headers": alice},
    ]  # fmt: skip
    on_postgres = not db_url.startswith("sqlite")

    fast = _answers(client, requests, {})
    assert _jobs(ctx) == 0
    if on_postgres:
        # The fast path refused on its async connection; it handed the general path only
        # what it always hands it (the request with a key, which may be a retry).
        assert paths.fast == ["refused", None, "refused", "refused", "refused"], paths.fast
        assert paths.general == 1
    else:
        assert paths.fast == [] and paths.general == 5

    paths.reset()
    ctx.settings.submit_fast_path = False
    try:
        routed = _answers(client, requests, {})
    finally:
        ctx.settings.submit_fast_path = True
    assert paths.fast == [] and paths.general == 5
    assert _jobs(ctx) == 0

    assert fast == routed
    for status, headers, body in fast[:4]:
        assert status == 422
        assert ("content-type", "application/problem+json") in headers
        assert MARKER in str(body)
    last = fast[4][2]
    if before is None:
        assert "unknown project" in str(last)  # the project check comes first
    else:
        assert MARKER in str(last)  # the new check was put before the project check

    # The general path's own callers (web form, CLI) meet it too; a clean command passes.
    with pytest.raises(ValidationError, match=MARKER):
        submitting.submit(ctx, centre.alice, JobForm(project="alpha", command=f"x {MARKER}"))
    ok = client.post(PATH, json=bad | {"command": "echo fine"}, headers=alice)
    assert ok.status_code == 201, ok.text


def test_template_and_dependency_reads_answer_alike_on_both_paths(
    env, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline's reads (the template, the jobs named in after_ok) run on the fast
    path's async connection too, with the route's answers."""
    ctx, centre, client = env
    alice, bob = _bearer(centre.alice_token), _bearer(centre.bob_token)
    plain = {"project": "alpha", "command": "true"}
    mine = client.post(PATH, json=plain, headers=alice).json()["id"]
    theirs = client.post(PATH, json={"project": "beta", "command": "true"}, headers=bob)
    ended = client.post(PATH, json=plain, headers=alice).json()["id"]
    assert client.post(f"{PATH}/{ended}/cancel", headers=alice).status_code == 200
    known = {mine: 0, theirs.json()["id"]: 1, ended: 2}
    requests: list[dict[str, Any]] = [
        {"json": {"project": "alpha", "template": "steps", "fields": {"steps": 4}}},
        {"json": {"project": "alpha", "template": "steps", "fields": {"steps": 99}}},
        {"json": {"project": "alpha", "template": "nope"}},
        {"json": plain | {"after_ok": [mine]}},
        {"json": plain | {"after_ok": [mine, theirs.json()["id"]]}},
        {"json": plain | {"after_ok": [mine, ended]}},
    ]
    requests = [r | {"headers": alice} for r in requests]
    paths = Paths(monkeypatch)

    fast = _answers(client, requests, dict(known))
    if not db_url.startswith("sqlite"):
        assert paths.fast == ["written", "refused", "refused", "written", "refused", "refused"]
        assert paths.general == 0  # no hand-over: every answer was the async path's own
    assert [row[0] for row in fast] == [201, 422, 422, 201, 422, 422]
    ctx.settings.submit_fast_path = False
    try:
        routed = _answers(client, requests, dict(known))
    finally:
        ctx.settings.submit_fast_path = True
    assert fast == routed
