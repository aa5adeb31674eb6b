"""The readiness check says what is wrong."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.persistence.db import migrate
from tests.factories import make_context


def test_ready_when_migrated_and_not_ready_when_behind(settings: Settings) -> None:
    ctx = make_context(settings)
    with TestClient(create_app(ctx, run_scheduler=False)) as client:
        ok = client.get("/readyz")
        assert ok.status_code == 200 and ok.json()["ready"] is True
        with ctx.engine.begin() as conn:
            conn.execute(text("DELETE FROM alembic_version"))
        behind = client.get("/readyz")
        assert behind.status_code == 503
        assert behind.headers["content-type"].startswith("application/problem+json")
        assert "gpucenter db upgrade" in behind.json()["detail"]
    ctx.engine.dispose()


def test_not_ready_without_a_database(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    settings = Settings(var_dir=tmp_path, database_url=f"sqlite:///{db}")
    migrate(settings.effective_database_url)
    ctx = make_context(settings)
    with TestClient(create_app(ctx, run_scheduler=False)) as client:
        ctx.engine.dispose()
        db.unlink()
        db.mkdir()  # the database file is replaced by a directory: it cannot be opened
        resp = client.get("/readyz")
        assert resp.status_code == 503
        assert resp.json()["checks"][0]["name"] == "database"
