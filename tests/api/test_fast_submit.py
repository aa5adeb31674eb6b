"""The job-submission fast path (api/fast_submit.py, services/jobs/fast_path.py) against
the FastAPI route it stands in for, on SQLite (thread path) and PostgreSQL (async
statements): the same answers to a table of good and bad requests, and the same guarantees
(one job per key, a dropped connection costs a fallback, not an error)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.persistence.tables import JobRow
from gpucenter.services.identity.tokens import issue
from gpucenter.services.jobs import submit as submitting
from tests.factories import Centre, make_context, seed_centre

PATH = "/api/v1/jobs"
# Headers that differ per request whoever answers (or carry the id, whose digits differ).
VARYING = {"x-request-id", "content-length", "date"}


@pytest.fixture
def env(settings: Settings) -> Iterator[tuple[Any, Centre, TestClient, str]]:
    ctx = make_context(settings)
    centre = seed_centre(ctx)
    with ctx.sessions.begin() as s:
        alice = s.scalar(text("SELECT id FROM users WHERE username = 'alice'"))
        _, read_only = issue(s, int(alice), datetime.now(tz=UTC), scopes=frozenset({"jobs:read"}))
    with TestClient(create_app(ctx, run_scheduler=False)) as client:
        yield ctx, centre, client, read_only
    ctx.engine.dispose()


def _steps(centre: Centre, read_only: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, request) in order; later steps may repeat earlier ones' keys."""
    alice = {"Authorization": f"Bearer {centre.alice_token}"}
    good = {"project": "alpha", "command": "echo hi", "gpus_per_node": 1}
    raw = {"content-type": "application/json"}
    return [
        ("plain", {"json": good, "headers": alice}),
        ("with key", {"json": good, "headers": alice | {"Idempotency-Key": "k1"}}),
        ("repeat", {"json": good, "headers": alice | {"Idempotency-Key": "k1"}}),
        (
            "key, other body",
            {"json": good | {"command": "echo 2"}, "headers": alice | {"Idempotency-Key": "k1"}},
        ),
        ("empty key", {"json": good, "headers": alice | {"Idempotency-Key": ""}}),
        ("long key", {"json": good, "headers": alice | {"Idempotency-Key": "k" * 201}}),
        (
            "script",
            {
                "json": {"project": "alpha", "script": "#GPUCENTER --time 5m\necho s\n"},
                "headers": alice,
            },
        ),
        ("array", {"json": good | {"array": "0-2"}, "headers": alice}),
        ("unknown dependency", {"json": good | {"after_ok": [999999]}, "headers": alice}),
        ("unknown template", {"json": good | {"template": "nope"}, "headers": alice}),
        ("fields without template", {"json": good | {"fields": {"a": 1}}, "headers": alice}),
        ("zero gpus", {"json": good | {"gpus_per_node": 0}, "headers": alice}),
        ("empty command", {"json": good | {"command": ""}, "headers": alice}),
        ("unknown gpu type", {"json": good | {"gpu_type": "tpu"}, "headers": alice}),
        ("too many gpus", {"json": good | {"gpus_per_node": 64}, "headers": alice}),
        ("unknown project", {"json": good | {"project": "nope"}, "headers": alice}),
        ("not my project", {"json": good | {"project": "beta"}, "headers": alice}),
        ("extra field", {"json": good | {"surprise": 1}, "headers": alice}),
        ("wrong type", {"json": good | {"gpus_per_node": "many"}, "headers": alice}),
        ("two bad fields", {"json": good | {"nodes": "x", "qos": 5}, "headers": alice}),
        ("huge time", {"json": good | {"time_limit_s": 2**40}, "headers": alice}),
        ("unknown qos", {"json": good | {"qos": "fast"}, "headers": alice}),
        ("relative workdir", {"json": good | {"workdir": "tmp"}, "headers": alice}),
        ("image on a process site", {"json": good | {"image": "x:1"}, "headers": alice}),
        ("NUL in the command", {"json": good | {"command": "echo \x00"}, "headers": alice}),
        ("NUL in an env value", {"json": good | {"env": {"A": "x\x00"}}, "headers": alice}),
        ("escape in an env name", {"json": good | {"env": {"A\x1b": "x"}}, "headers": alice}),
        ("NUL in the project", {"json": good | {"project": "alpha\x00"}, "headers": alice}),
        ("bad duration", {"json": {"project": "alpha", "command": "x", "time": "soon"}}),
        ("no token", {"json": good}),
        ("no token, bad body", {"json": good | {"gpus_per_node": "many"}}),
        ("unknown token", {"json": good, "headers": {"Authorization": "Bearer gpc_nope"}}),
        ("basic scheme", {"json": good, "headers": {"Authorization": "Basic YTpi"}}),
        ("bare bearer", {"json": good, "headers": {"Authorization": "Bearer "}}),
        ("token without jobs:submit", {"json": good, "headers": _bearer(read_only)}),
        ("not json", {"content": b"{not json", "headers": alice | raw}),
        ("not json, no token", {"content": b"{not json", "headers": raw}),
        ("a list", {"content": b"[1, 2]", "headers": alice | raw}),
        ("null", {"content": b"null", "headers": alice | raw}),
        ("empty body", {"content": b"", "headers": alice | raw}),
        ("text/plain", {"content": b'{"project": "alpha"}', "headers": alice}),
        ("json with charset", {"content": b'{"project": "alpha", "command": "c"}',
                               "headers": alice | {"content-type": "application/json; q=1"}}),
        ("json+suffix type", {"content": b'{"project": "alpha", "command": "c"}',
                              "headers": alice | {"content-type": "application/x+json"}}),
    ]  # fmt: skip


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _normalise(resp: Any, ids: dict[int, int]) -> tuple[Any, ...]:
    """Status, headers and body with job ids as 'the n-th job seen' and no timestamps."""

    def job_id(value: int | None) -> int | None:
        return None if value is None else ids.setdefault(value, len(ids))

    headers = sorted((k, v) for k, v in resp.headers.items() if k not in VARYING)
    body = resp.json() if resp.content else None
    if resp.status_code == 201:
        body["id"] = job_id(body["id"])
        body["array_job_id"] = job_id(body["array_job_id"])
        if body["array_task_ids"] is not None:
            body["array_task_ids"] = [job_id(i) for i in body["array_task_ids"]]
        del body["submitted_at"]
    return resp.status_code, headers, body


def _run(client: TestClient, steps: list[tuple[str, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    ids: dict[int, int] = {}
    return [(label, *_normalise(client.post(PATH, **req), ids)) for label, req in steps]


def _wipe(ctx: Any) -> None:
    with ctx.engine.begin() as conn:
        conn.execute(JobRow.__table__.delete())


def test_fast_path_and_fastapi_route_answer_alike(env) -> None:
    """The same table of requests, answered by the fast path and then by the FastAPI route
    from the same starting state, gives the same statuses, headers and bodies."""
    ctx, centre, client, read_only = env
    steps = _steps(centre, read_only)
    fast = _run(client, steps)
    assert [row[1] for row in fast][:4] == [201, 201, 201, 409]
    _wipe(ctx)
    ctx.settings.submit_fast_path = False
    try:
        routed = _run(client, steps)
    finally:
        ctx.settings.submit_fast_path = True
    for got, want in zip(fast, routed, strict=True):
        assert got == want, got[0]


def _count_async(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record what each `submit_async` call answered (None: the general path)."""
    answers: list[Any] = []
    real: Callable[..., Any] = submitting.submit_async

    async def counting(*args: Any, **kwargs: Any) -> Any:
        answer = await real(*args, **kwargs)
        answers.append(answer)
        return answer

    monkeypatch.setattr(submitting, "submit_async", counting)
    return answers


def test_on_postgresql_plain_submissions_take_the_async_statements(
    env, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, centre, client, _ = env
    answers = _count_async(monkeypatch)
    general: list[Any] = []
    real_submit = submitting.submit
    monkeypatch.setattr(
        submitting, "submit", lambda *a, **k: general.append(a) or real_submit(*a, **k)
    )
    headers = _bearer(centre.alice_token)
    body = {"project": "alpha", "command": "true", "gpus_per_node": 1}
    ids = []
    for i in range(5):
        resp = client.post(PATH, json=body, headers=headers | {"Idempotency-Key": f"p{i}"})
        assert resp.status_code == 201, resp.text
        ids.append(resp.json()["id"])
    again = client.post(PATH, json=body, headers=headers | {"Idempotency-Key": "p0"})
    assert again.status_code == 201
    assert again.json()["id"] == ids[0]
    other = body | {"command": "echo other"}
    clash = client.post(PATH, json=other, headers=headers | {"Idempotency-Key": "p0"})
    assert clash.status_code == 409, clash.text
    with ctx.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(JobRow)) == 5
    if db_url.startswith("sqlite"):
        assert answers == [] and len(general) == 7  # SQLite: submit in a thread
    else:
        # The repeat is answered on the async connection too (it reads the job it repeats);
        # a repeat with another body is a Conflict there, never a thread-path check.
        assert [a is not None for a in answers] == [True] * 6
        assert general == []


def test_a_dropped_pool_connection_falls_back_without_an_error(env, db_url: str) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL only: SQLite has no async pool")
    ctx, centre, client, _ = env
    body = {"project": "alpha", "command": "true", "gpus_per_node": 1}
    assert client.post(PATH, json=body, headers=_bearer(centre.alice_token)).status_code == 201
    with ctx.engine.begin() as conn:  # every other backend of this database goes away
        conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    ctx.engine.dispose()
    for _ in range(3):
        resp = client.post(PATH, json=body, headers=_bearer(centre.alice_token))
        assert resp.status_code == 201, resp.text
    with ctx.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(JobRow)) == 4


def test_concurrent_retries_of_one_key_make_one_job_on_the_fast_path(env) -> None:
    """Many clients retrying one key at once: one job, every answer names it."""
    from concurrent.futures import ThreadPoolExecutor

    ctx, centre, client, _ = env
    headers = _bearer(centre.alice_token) | {"Idempotency-Key": "storm"}
    body = {"project": "alpha", "command": "echo once", "gpus_per_node": 1}
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: client.post(PATH, json=body, headers=headers), range(48)))
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["id"] for r in answers}) == 1
    with ctx.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(JobRow)) == 1


def test_without_the_lifespan_the_fast_path_uses_the_thread_path(settings: Settings) -> None:
    """A client that never ran the app's lifespan (no pool): submissions still work."""
    ctx = make_context(settings)
    centre = seed_centre(ctx)
    client = TestClient(create_app(ctx, run_scheduler=False))
    body = {"project": "alpha", "command": "true"}
    resp = client.post(PATH, json=body, headers=_bearer(centre.alice_token))
    assert resp.status_code == 201, resp.text
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def test_concurrent_misses_of_one_token_resolve_it_once(env, monkeypatch) -> None:
    """A cold cache and many requests of one client: one database resolution, all served."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from gpucenter.http import deps
    from gpucenter.services.identity.token_cache import clear_all

    _, centre, client, _ = env
    resolutions: list[str] = []
    real = deps.resolve_token

    def slow(ctx: Any, token: str) -> Any:
        resolutions.append(token)
        time.sleep(0.3)  # long enough for every request below to miss meanwhile
        return real(ctx, token)

    monkeypatch.setattr(deps, "resolve_token", slow)
    clear_all()
    body = {"project": "alpha", "command": "true"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: client.post(PATH, json=body, headers=_bearer(centre.alice_token)),
                range(8),
            )
        )
    assert [r.status_code for r in answers] == [201] * 8
    assert len(resolutions) == 1
    clear_all()
    bad = client.post(PATH, json=body, headers=_bearer("gpc_unknown"))
    assert bad.status_code == 401  # an error reaches the request that resolved it
