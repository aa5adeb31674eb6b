"""Another tenant against one tenant's interactive session and project sharing routes: each
refused (403 or 404) and nothing changed. The matrix walk in test_isolation.py lists these
routes from here. The live proxy itself (a running JupyterLab, HTTP and WebSocket) is
tested in tests/web/test_sessions_browser.py and tests/slurm/test_slurm_session.py."""

from __future__ import annotations

import sys

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gpucenter.auth.credentials import hash_password
from gpucenter.domain.sessions import kind_named
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import JobRow, ProjectRow, SessionShareRow
from gpucenter.services.sessions import manage as sessions
from tests.security.conftest import Env, auth
from tests.security.web import csrf_of, web_session

ROUTES: list[tuple[str, str]] = [
    ("GET", "/sessions/{job_id}/app/{path:path}"),
    ("POST", "/sessions/{job_id}/stop"),
    ("POST", "/sessions/{job_id}/share"),
    ("GET", "/api/v1/projects/{project}/sharing"),
    ("PUT", "/api/v1/projects/{project}/sharing"),
    ("POST", "/projects/{project_id}/sharing"),
]


def _signed_in(env: Env, username: str) -> TestClient:
    with env.ctx.sessions.begin() as s:
        repo.user_by_name(s, username).password_hash = hash_password(f"{username}-password-x")
    client = TestClient(env.client.app, base_url="https://testserver")
    return web_session(client, username, f"{username}-password-x")


def test_another_tenant_cannot_use_stop_share_or_reach_a_session(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    on = env.ctx.settings.model_copy(update={"session_python": sys.executable})
    monkeypatch.setattr(env.ctx, "settings", on)
    job = sessions.start(env.ctx, env.centre.alice, kind_named("jupyterlab"), "alpha", 1, "1h")
    with env.ctx.sessions() as s:
        alpha = s.scalar(select(ProjectRow.id).where(ProjectRow.name == "alpha"))
    bob = _signed_in(env, "bob")
    token = csrf_of(bob.get("/sessions").text)

    for path in ("lab", "api/kernels", "api/contents/secret.ipynb"):
        r = bob.get(f"/sessions/{job.id}/app/{path}")
        assert r.status_code in (403, 404), (path, r.status_code)
    r = bob.post(f"/sessions/{job.id}/stop", data={"csrf": token}, follow_redirects=False)
    assert r.status_code in (403, 404), r.status_code
    r = bob.post(
        f"/sessions/{job.id}/share",
        data={"csrf": token, "username": "bob", "allow": "1"},
        follow_redirects=False,
    )
    assert r.status_code in (403, 404), r.status_code
    r = bob.post(
        f"/projects/{alpha}/sharing", data={"csrf": token, "share": "1"}, follow_redirects=False
    )
    assert r.status_code in (403, 404), r.status_code
    api = env.client
    r = api.get("/api/v1/projects/alpha/sharing", headers=auth(env.centre.bob_token))
    assert r.status_code in (403, 404), r.status_code
    r = api.put(
        "/api/v1/projects/alpha/sharing",
        json={"share_outputs": True},
        headers=auth(env.centre.bob_token),
    )
    assert r.status_code in (403, 404), r.status_code

    with env.ctx.sessions() as s:  # nothing changed for alice
        row = s.get_one(JobRow, job.id)
        assert row.state == "PENDING" and row.cancel_requested_at is None
        assert s.scalars(select(SessionShareRow)).all() == []
        assert s.scalar(select(ProjectRow.share_outputs).where(ProjectRow.id == alpha)) is False
