"""Why is my job pending, through the API (issue 22 item 6): one sentence, the place among
jobs waiting for the same GPU type, the expected start, and what would start it sooner,
each a message code with parameters; only for someone who may see the job.

The suggestions come from what-if passes over the sites this server schedules onto: a site
the database knows but the server does not run (here one with h100 nodes) is never offered.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.persistence.tables import NodeRow, SiteRow
from gpucenter.services.scheduling.cycle import run_pass
from tests.factories import make_context, seed_centre, wait_until


@pytest.fixture
def setup(settings: Settings):
    ctx = make_context(settings)  # one node, four vgpu GPUs
    centre = seed_centre(ctx)
    with ctx.sessions.begin() as s:  # known to the database, not scheduled by this server
        other = SiteRow(name="elsewhere", kind="slurm")
        s.add(other)
        s.flush()
        s.add(NodeRow(site_id=other.id, name="elsewhere-g01", gpu_type="h100", gpu_count=8))
    app = create_app(ctx, run_scheduler=False)
    with TestClient(app) as client:
        yield ctx, centre, client
    ctx.engine.dispose()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_pending_job_says_why_where_when_and_what_would_start_it_sooner(setup) -> None:
    ctx, centre, client = setup
    alice = _auth(centre.alice_token)

    def submit(gpus: int, command: str, limit: int = 600) -> int:
        resp = client.post(
            "/api/v1/jobs",
            json={
                "project": "alpha",
                "command": command,
                "gpus_per_node": gpus,
                "time_limit_s": limit,
            },
            headers=alice,
        )
        assert resp.status_code == 201, resp.text
        return int(resp.json()["id"])

    holder = submit(2, "sleep 60")

    def holder_runs() -> bool:
        run_pass(ctx)
        return client.get(f"/api/v1/jobs/{holder}", headers=alice).json()["state"] == "RUNNING"

    wait_until(holder_runs, timeout=30, step=0.2)
    waiting = submit(3, "true")
    run_pass(ctx)
    try:
        resp = client.get(f"/api/v1/jobs/{waiting}/pending", headers=alice)
        assert resp.status_code == 200, resp.text
        why = resp.json()
        assert why["job_id"] == waiting
        assert why["reason"] == "Resources"
        assert why["sentence"]["code"] == "pending.sentence.resources"
        assert why["sentence"]["params"] == {"gpu_type": "vgpu", "gpus": 3}
        assert "vgpu" in why["sentence"]["text"]
        assert (why["position"], why["waiting"], why["gpu_type"]) == (1, 1, "vgpu")
        # The backfill plan's start: when the holder's time limit is up, at the latest.
        start = datetime.fromisoformat(why["expected_start"])
        assert start.tzinfo is not None and start > datetime.now(tz=UTC)
        kinds = {(s["kind"], s["value"]) for s in why["sooner"]}
        assert ("gpus", 2) in kinds, why["sooner"]
        assert not any(kind == "gpu_type" for kind, _ in kinds), why["sooner"]
        assert all(s["code"].startswith("pending.") and s["text"] for s in why["sooner"])

        # Another tenant does not learn the job exists; a job that is not pending has no wait.
        bob = _auth(centre.bob_token)
        assert client.get(f"/api/v1/jobs/{waiting}/pending", headers=bob).status_code == 404
        resp = client.get(f"/api/v1/jobs/{holder}/pending", headers=alice)
        assert resp.status_code == 409
        assert resp.json()["code"] == "error.not_pending"
    finally:
        for job in (waiting, holder):
            client.post(f"/api/v1/jobs/{job}/cancel", headers=alice)
        run_pass(ctx)
