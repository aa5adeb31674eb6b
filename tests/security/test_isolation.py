"""Tenant isolation: for every route that takes an id, a user of another project or
organisation gets 404 or 403, never the data; a conflicted reviewer never sees scores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gpucenter.http.permissions import iter_api_routes
from tests.security.conftest import Env, auth
from tests.security.test_isolation_accounting import ACCOUNTING_ROUTES
from tests.security.test_isolation_awards import AWARD_ROUTES
from tests.security.test_isolation_programmes import MANAGER_ROUTES
from tests.security.test_isolation_web import NOT_AN_ID, WEB_ROUTES

# Routes with an id in the path that this matrix covers; the walk below fails when a new one
# appears, so that it is added here (and so checked) rather than missed.
JOB_ROUTES = [
    ("GET", "/api/v1/jobs/{job_id}"),
    ("GET", "/api/v1/jobs/{job_id}/logs"),
    ("GET", "/api/v1/jobs/{job_id}/events"),
    ("GET", "/api/v1/jobs/{job_id}/pending"),
    ("POST", "/api/v1/jobs/{job_id}/cancel"),
]
PROGRAMME_ROUTES = [
    ("GET", "/api/v1/programmes/applications/{app_id}"),
    ("POST", "/api/v1/programmes/applications/{app_id}/submit"),
    ("POST", "/api/v1/programmes/applications/{app_id}/withdraw"),
    ("POST", "/api/v1/programmes/applications/{app_id}/conflicts"),
    ("GET", "/api/v1/programmes/applications/{app_id}/reviews"),
    ("PUT", "/api/v1/programmes/applications/{app_id}/review"),
]
ADMIN_ONLY = [
    ("DELETE", "/api/v1/tokens/{token_id}"),
    ("DELETE", "/api/v1/admin/roles/{username}/{role}"),
]


def test_the_matrix_covers_every_route_with_an_id(env: Env) -> None:
    covered = {
        p
        for _, p in JOB_ROUTES
        + PROGRAMME_ROUTES
        + ADMIN_ONLY
        + MANAGER_ROUTES
        + ACCOUNTING_ROUTES
        + WEB_ROUTES
        + AWARD_ROUTES
    } | NOT_AN_ID
    with_ids = {
        path
        for path, _ in iter_api_routes(env.client.app.routes)  # type: ignore[attr-defined]
        if "{" in path
    }
    missing = with_ids - covered
    assert missing == set(), f"add these to the isolation matrix: {sorted(missing)}"


def test_another_tenant_gets_404_or_403_on_every_job_route(env: Env) -> None:
    c, alice, bob = env.client, env.centre.alice_token, env.centre.bob_token
    job = c.post(
        "/api/v1/jobs",
        json={"project": "alpha", "command": "echo secret-output"},
        headers=auth(alice),
    )
    job_id = job.json()["id"]
    # The job waits, so its owner is told why: bob's 404 below is not "nothing to explain".
    assert c.get(f"/api/v1/jobs/{job_id}/pending", headers=auth(alice)).status_code == 200
    for method, path in JOB_ROUTES:
        r = c.request(method, path.format(job_id=job_id), headers=auth(bob))
        assert r.status_code in (403, 404), (method, path, r.status_code)
        assert "secret-output" not in r.text
    assert job_id not in [j["id"] for j in c.get("/api/v1/jobs", headers=auth(bob)).json()["items"]]
    # Projects, allocations and usage: bob sees only beta.
    assert [p["name"] for p in c.get("/api/v1/projects", headers=auth(bob)).json()] == ["beta"]
    assert c.get("/api/v1/usage", params={"project": "alpha"}, headers=auth(bob)).json() == []
    assert (
        c.get("/api/v1/jobs", params={"project": "alpha"}, headers=auth(bob)).json()["items"] == []
    )
    # Admin-only routes with ids: a member is refused.
    for method, path in ADMIN_ONLY:
        url = path.format(token_id=1, username="alice", role="site_operator")
        assert c.request(method, url, headers=auth(bob)).status_code in (403, 404)


def test_applications_and_reviews_are_isolated(env: Env) -> None:
    c, root = env.client, env.centre.admin_token
    alice, bob = env.centre.alice_token, env.centre.bob_token
    now = datetime.now(tz=UTC)
    pid = c.post(
        "/api/v1/programmes", json={"name": "ai", "owner": "MSIT"}, headers=auth(root)
    ).json()["id"]
    call = {
        "name": "r1",
        "opens_at": (now - timedelta(days=1)).isoformat(),
        "closes_at": (now + timedelta(days=9)).isoformat(),
        "capacity": {"h100": {"2026Q2": 5000}},
        "config": {},
    }
    cid = c.post(f"/api/v1/programmes/{pid}/calls", json=call, headers=auth(root)).json()["id"]
    body = {
        "title": "secret-plan",
        "region": "busan",
        "min_gpu_hours": 100,
        "requests": [{"gpu_type": "h100", "period": "2026Q2", "gpu_hours": 400}],
    }
    base = "/api/v1/programmes"
    made = c.post(f"{base}/calls/{cid}/applications", json=body, headers=auth(alice))
    assert made.status_code == 201, made.text
    aid = made.json()["id"]
    payloads = {"conflicts": {"reason": "x"}, "review": {"scores": {"merit": 5}, "comment": ""}}
    for method, path in PROGRAMME_ROUTES:
        last = path.rsplit("/", 1)[-1]
        r = c.request(method, path.format(app_id=aid), headers=auth(bob), json=payloads.get(last))
        assert r.status_code in (403, 404, 422), (method, path, r.status_code, r.text)
        assert "secret-plan" not in r.text
    for path in (
        "/{programme_id}/calls",
        "/calls/{call_id}/applications",
        "/calls/{call_id}/awards",
    ):
        r = c.get(base + path.format(programme_id=pid, call_id=cid), headers=auth(bob))
        assert r.status_code in (200, 403, 404) and "secret-plan" not in r.text
    # A reviewer who declares a conflict never sees the application's scores.
    r = c.post(
        f"{base}/{pid}/roles", json={"username": "bob", "role": "reviewer"}, headers=auth(root)
    )
    assert r.status_code == 201, r.text
    c.post(f"{base}/applications/{aid}/submit", headers=auth(alice))
    c.post(f"{base}/applications/{aid}/conflicts", json={"reason": "co-author"}, headers=auth(bob))
    r = c.get(f"{base}/applications/{aid}/reviews", headers=auth(bob))
    assert r.status_code in (403, 404) and "total" not in r.text
