"""The REST API in-process (FastAPI TestClient), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.persistence.tables import JobRow
from gpucenter.services.scheduling.cycle import run_pass
from tests.factories import make_context, seed_centre, wait_until


@pytest.fixture
def setup(settings: Settings):
    ctx = make_context(settings)
    centre = seed_centre(ctx)
    app = create_app(ctx, run_scheduler=False)
    with TestClient(app) as client:
        yield ctx, centre, client
    ctx.engine.dispose()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health_answers_without_credentials(setup) -> None:
    _, _, client = setup
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.json()["status"] == "ok"


def test_api_needs_a_valid_token(setup) -> None:
    _, _, client = setup
    for headers in ({}, _auth("gpc_not-a-real-token")):
        resp = client.get("/api/v1/jobs", headers=headers)
        assert resp.status_code == 401
        assert resp.headers["content-type"].startswith("application/problem+json")


def test_submit_runs_and_logs_are_readable(setup) -> None:
    ctx, centre, client = setup
    resp = client.post(
        "/api/v1/jobs",
        json={"project": "alpha", "command": "echo from-rest", "gpus_per_node": 1},
        headers=_auth(centre.alice_token),
    )
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["id"]
    assert resp.json()["state"] == "PENDING"

    def finished() -> bool:
        run_pass(ctx)
        return (
            client.get(f"/api/v1/jobs/{job_id}", headers=_auth(centre.alice_token)).json()["state"]
            == "COMPLETED"
        )

    wait_until(finished, timeout=20, step=0.1)
    logs = client.get(f"/api/v1/jobs/{job_id}/logs", headers=_auth(centre.alice_token))
    assert logs.text == "from-rest\n"
    assert logs.headers["X-Job-Finished"] == "true"
    projects = client.get("/api/v1/projects", headers=_auth(centre.alice_token)).json()
    assert projects[0]["allocations"][0]["used_gpu_hours"] > 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"project": "alpha", "command": "x", "gpus_per_node": 0}, "gpus_per_node"),
        ({"project": "alpha", "command": "", "gpus_per_node": 1}, "command"),
        ({"project": "alpha", "command": "x", "gpu_type": "tpu"}, "gpu_type"),
        ({"project": "nope", "command": "x"}, "project"),
        ({"project": "alpha", "command": "x", "gpus_per_node": 64}, "gpus_per_node"),
        ({"project": "alpha", "command": "x", "surprise": 1}, "surprise"),
        ({"project": "alpha", "command": "x", "gpus_per_node": "many"}, "gpus_per_node"),
    ],
)
def test_bad_submissions_get_problem_json_naming_the_field(setup, body, field) -> None:
    ctx, centre, client = setup
    resp = client.post("/api/v1/jobs", json=body, headers=_auth(centre.alice_token))
    assert resp.status_code == 422
    assert resp.headers["content-type"].startswith("application/problem+json")
    problem = resp.json()
    assert any(e["field"] == field for e in problem["errors"]), problem
    with ctx.sessions.begin() as s:
        assert s.scalar(select(func.count()).select_from(JobRow)) == 0


def test_idempotent_submit_returns_the_same_job_and_refuses_a_different_body(setup) -> None:
    _, centre, client = setup
    body = {"project": "alpha", "command": "echo once"}
    headers = _auth(centre.alice_token) | {"Idempotency-Key": "k-1"}
    first = client.post("/api/v1/jobs", json=body, headers=headers)
    again = client.post("/api/v1/jobs", json=body, headers=headers)
    assert first.status_code == 201 and again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    other = client.post("/api/v1/jobs", json=body | {"command": "echo twice"}, headers=headers)
    assert other.status_code == 409


def test_another_tenants_job_is_not_found(setup) -> None:
    _, centre, client = setup
    job_id = client.post(
        "/api/v1/jobs",
        json={"project": "alpha", "command": "echo"},
        headers=_auth(centre.alice_token),
    ).json()["id"]
    for url in (f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{job_id}/logs"):
        assert client.get(url, headers=_auth(centre.bob_token)).status_code == 404
    assert (
        client.post(f"/api/v1/jobs/{job_id}/cancel", headers=_auth(centre.bob_token)).status_code
        == 404
    )


def test_sign_in_with_password_gives_a_working_token(setup) -> None:
    _, _, client = setup
    bad = client.post("/api/v1/auth/token", json={"username": "root", "password": "wrong"})
    assert bad.status_code == 401
    good = client.post("/api/v1/auth/token", json={"username": "root", "password": "root-password"})
    token = good.json()["token"]
    me = client.get("/api/v1/me", headers=_auth(token)).json()
    assert me["username"] == "root" and me["is_admin"] is True


def test_front_page_needs_a_browser_session(setup) -> None:
    _, centre, client = setup
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"
    # A bearer token is for the API, not for the pages.
    page = client.get("/", headers=_auth(centre.admin_token), follow_redirects=False)
    assert page.status_code == 303


def test_a_cached_token_stops_working_when_revoked(setup) -> None:
    """Tokens are cached briefly per process (token_cache.py): a revocation made through this
    process is seen at once; one made elsewhere (a bare UPDATE, as another server's would
    look from here) still stops submissions at once, because a submission re-checks."""
    from sqlalchemy import update

    from gpucenter.persistence.tables import ApiTokenRow, UserRow

    ctx, centre, client = setup
    headers = _auth(centre.alice_token)
    body = {"project": "alpha", "command": "true", "gpus_per_node": 1}
    assert client.get("/api/v1/jobs", headers=headers).status_code == 200  # now cached
    with ctx.engine.begin() as conn:  # not through a Session: no cache invalidation
        alice = conn.execute(select(UserRow.id).where(UserRow.username == "alice")).scalar()
        conn.execute(
            update(ApiTokenRow).where(ApiTokenRow.user_id == alice).values(revoked_at=func.now())
        )
    resp = client.post("/api/v1/jobs", json=body, headers=headers)
    assert resp.status_code == 401, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    with ctx.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(JobRow)) == 0

    bob = _auth(centre.bob_token)
    (token,) = client.get("/api/v1/tokens", headers=bob).json()  # cached from here on
    assert client.delete(f"/api/v1/tokens/{token['id']}", headers=bob).status_code == 200
    assert client.get("/api/v1/jobs", headers=bob).status_code == 401  # same process: at once


def test_idempotent_retries_in_a_burst_make_one_job(setup) -> None:
    """Concurrent retries of one key race on INSERT ... ON CONFLICT: one job, same answer."""
    from concurrent.futures import ThreadPoolExecutor

    ctx, centre, client = setup
    headers = _auth(centre.alice_token) | {"Idempotency-Key": "burst"}
    body = {"project": "alpha", "command": "echo once", "gpus_per_node": 1}
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda _: client.post("/api/v1/jobs", json=body, headers=headers), range(16))
        )
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["id"] for r in answers}) == 1
    with ctx.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(JobRow)) == 1
