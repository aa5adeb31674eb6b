"""The accounting REST routes: members see their budget, reports need a manager or admin,
exports carry the same figures, /metrics speaks the Prometheus text format."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.persistence.db import migrate
from tests.accounting.conftest import T0, World, add_job, run_and_charge


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """SQLite only here: the services under these routes are tested on both databases."""
    url = f"sqlite:///{tmp_path / 'gpucenter.db'}"
    migrate(url)
    return Settings(var_dir=tmp_path / "var", database_url=url, scheduler_interval_s=0.2)


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(world.ctx, run_scheduler=False)) as c:
        yield c


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_members_see_their_budget_and_not_the_reports(world: World, client: TestClient) -> None:
    with world.ctx.sessions.begin() as s:
        run_and_charge(s, add_job(s, world, alpha=True), 3600 * 60)
    alice = _auth(world.centre.alice_token)
    resp = client.get("/api/v1/accounting/budgets", headers=alice)
    assert resp.status_code == 200
    (mine,) = resp.json()
    assert mine["allocation_id"] == world.alpha_alloc and mine["used_fraction"] == 0.6
    resp = client.get("/api/v1/accounting/reports/usage?from=2026-01&to=2026-12", headers=alice)
    assert resp.status_code == 403
    assert client.get("/metrics", headers=alice).status_code == 403
    assert client.get("/api/v1/accounting/budgets").status_code == 401


def test_admin_reports_and_exports(world: World, client: TestClient) -> None:
    with world.ctx.sessions.begin() as s:
        run_and_charge(s, add_job(s, world, alpha=True, gpu_type="b200", started=T0), 7200)
        run_and_charge(s, add_job(s, world, alpha=False, started=T0), 3600)
    root = _auth(world.centre.admin_token)
    url = "/api/v1/accounting/reports/usage?from=2026-03&to=2026-03&by=applicant_type,gpu_type"
    rows = client.get(url, headers=root).json()
    assert {(r["applicant_type"], r["gpu_type"]): r["value_krw"] for r in rows} == {
        ("university", "b200"): 14000.0,
        ("startup", "h100"): 3000.0,
    }
    resp = client.get(url + "&format=csv", headers=root)
    assert resp.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(resp.content.decode("utf-8-sig"))))
    assert sorted(float(r["gpu_hours"]) for r in parsed) == [1.0, 2.0]
    resp = client.get(url + "&format=xlsx", headers=root)
    assert resp.content[:2] == b"PK"
    statement = client.get(
        "/api/v1/accounting/reports/supplier-statement?month=2026-03", headers=root
    ).json()
    assert sum(x["gpu_hours"] for x in statement) == pytest.approx(3.0)
    metrics = client.get("/metrics", headers=root)
    assert metrics.status_code == 200
    assert "gpucenter_ledger_lag_seconds" in metrics.text
    assert "# TYPE gpucenter_cycle_seconds histogram" in metrics.text


def test_refund_via_the_api_is_idempotent(world: World, client: TestClient) -> None:
    with world.ctx.sessions.begin() as s:
        job = add_job(s, world, alpha=True)
        run_and_charge(s, job, 3600)
    root = _auth(world.centre.admin_token)
    body = {"kind": "refund", "job_id": job.id, "reason": "node failed"}
    first = client.post("/api/v1/accounting/adjustments", json=body, headers=root)
    second = client.post("/api/v1/accounting/adjustments", json=body, headers=root)
    assert first.status_code == 201 and first.json()[0]["created"] is True
    assert second.json()[0]["created"] is False
    (mine,) = client.get(
        "/api/v1/accounting/budgets", headers=_auth(world.centre.alice_token)
    ).json()
    assert mine["used_gpu_hours"] == 0.0


def test_request_ids_reach_the_json_log_and_the_response() -> None:
    import json
    import logging

    from fastapi import FastAPI

    from gpucenter.http.request_ids import RequestIdMiddleware
    from gpucenter.logs import JsonFormatter

    app = FastAPI()
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(JsonFormatter().format(record))

    logger = logging.getLogger("gpucenter.test.rid")
    logger.addHandler(Capture())
    logger.setLevel(logging.INFO)

    @app.get("/x")
    def x() -> dict[str, str]:
        logger.info("inside")
        return {}

    app.add_middleware(RequestIdMiddleware)
    with TestClient(app) as c:
        resp = c.get("/x", headers={"X-Request-ID": "abc-123"})
        bad = c.get("/x", headers={"X-Request-ID": "evil\nline"})
    assert resp.headers["x-request-id"] == "abc-123"
    assert bad.headers["x-request-id"] != "evil\nline"
    assert json.loads(records[0])["request_id"] == "abc-123"


def test_cli_report_exports_csv(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from gpucenter.cli.accounting import app
    from gpucenter.config import get_settings

    with world.ctx.sessions.begin() as s:
        run_and_charge(s, add_job(s, world, alpha=True, started=T0), 3600)
    monkeypatch.setenv("GPUCENTER_DATABASE_URL", world.ctx.settings.effective_database_url)
    get_settings.cache_clear()
    out = tmp_path / "r.csv"
    try:
        args = ["report", "--as", "root", "--from", "2026-03", "--to", "2026-03"]
        result = CliRunner().invoke(app, [*args, "-f", "csv", "-o", str(out)])
        denied = CliRunner().invoke(
            app, ["report", "--as", "alice", "--from", "2026-03", "--to", "2026-03"]
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert rows == [
        {
            "month": "2026-03",
            "applicant_type": "university",
            "gpu_hours": "1.0",
            "normalised_gpu_hours": "1.0",
            "value_krw": "3000.0",
            "entries": "1",
        }
    ]
    assert denied.exit_code != 0
