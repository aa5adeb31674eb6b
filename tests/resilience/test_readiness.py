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


def test_not_ready_while_scheduling_passes_keep_failing(settings: Settings) -> None:
    """A scheduler whose every pass fails starts and ends no job: /readyz says so, with the
    error, and is ready again once a pass works."""
    from gpucenter.dispatch.local.dispatcher import LocalDispatcher
    from tests.factories import wait_until

    class Broken(LocalDispatcher):
        broken = True

        def poll(self):  # type: ignore[no-untyped-def]
            if self.broken:
                raise RuntimeError("poll broke")
            return super().poll()

    ctx = make_context(settings)
    ctx.dispatcher.shutdown()
    broken = Broken(settings.log_dir, kill_grace_s=0.5)
    ctx.dispatcher = broken
    with TestClient(create_app(ctx)) as client:
        wait_until(lambda: client.get("/readyz").status_code == 503, timeout=30)
        body = client.get("/readyz").json()
        failing = [c for c in body["checks"] if c["name"] == "scheduling passes"]
        assert failing and not failing[0]["ok"]
        assert "poll broke" in failing[0]["detail"] and "scheduling passes failed" in body["detail"]
        broken.broken = False
        wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30)
    ctx.engine.dispose()
