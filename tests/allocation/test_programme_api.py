"""The programme routes: problem+json errors with the field, and no peeking at others' data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.services.identity import accounts
from tests.factories import make_context


def test_call_apply_submit_and_isolation(settings: Settings) -> None:
    ctx = make_context(settings)
    now = datetime.now(tz=UTC)
    with ctx.sessions.begin() as s:
        accounts.create_organisation(s, "Uni", "university", now)
        accounts.create_organisation(s, "Gov", "government", now)
        root = accounts.create_user(s, "root", now, is_admin=True).token
        pm = accounts.create_user(s, "pm", now, organisation="Gov").token
        alice = accounts.create_user(s, "alice", now, organisation="Uni").token
        bob = accounts.create_user(s, "bob", now, organisation="Gov").token
    with TestClient(create_app(ctx, run_scheduler=False)) as client:

        def h(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        assert client.get("/api/v1/programmes").status_code == 401
        r = client.post("/api/v1/programmes", json={"name": "ai", "owner": "MSIT"}, headers=h(pm))
        assert r.status_code == 403
        pid = client.post(
            "/api/v1/programmes", json={"name": "ai", "owner": "MSIT"}, headers=h(root)
        ).json()["id"]
        r = client.post(
            f"/api/v1/programmes/{pid}/roles",
            json={"username": "pm", "role": "programme_manager"},
            headers=h(root),
        )
        assert r.status_code == 201
        call = {
            "name": "r1",
            "opens_at": (now - timedelta(days=1)).isoformat(),
            "closes_at": (now + timedelta(days=9)).isoformat(),
            "capacity": {"h100": {"2026Q2": 5000}},
            "config": {"eligible_types": ["university"]},
        }
        cid = client.post(f"/api/v1/programmes/{pid}/calls", json=call, headers=h(pm)).json()["id"]
        body = {
            "title": "LLM",
            "region": "busan",
            "min_gpu_hours": 100,
            "requests": [{"gpu_type": "h100", "period": "2026Q2", "gpu_hours": 400}],
        }
        base = "/api/v1/programmes"
        aid = client.post(f"{base}/calls/{cid}/applications", json=body, headers=h(alice)).json()[
            "id"
        ]
        assert client.post(f"{base}/applications/{aid}/submit", headers=h(alice)).status_code == 200
        assert client.get(f"{base}/applications/{aid}", headers=h(bob)).status_code == 404
        assert client.get(f"{base}/applications/{aid}", headers=h(pm)).status_code == 200
        assert client.get(f"{base}/calls/{cid}/applications", headers=h(bob)).json() == []
        gov = client.post(f"{base}/calls/{cid}/applications", json=body, headers=h(bob)).json()[
            "id"
        ]
        r = client.post(f"{base}/applications/{gov}/submit", headers=h(bob))
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["errors"][0]["field"] == "organisation"
        r = client.post(f"{base}/calls/{cid}/award-runs", json={}, headers=h(alice))
        assert r.status_code == 403
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()
