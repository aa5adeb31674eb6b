"""`gpucenter db backup` and `restore` on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gpucenter.config import Settings
from gpucenter.domain.errors import ValidationError
from gpucenter.persistence import backup
from gpucenter.persistence.tables import JobRow, ProjectRow
from gpucenter.services.jobs import manage as jobs
from tests.factories import make_context, seed_centre


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCENTER_")} | {
        "GPUCENTER_DATABASE_URL": settings.effective_database_url,
        "GPUCENTER_VAR_DIR": str(settings.var_dir),
    }
    return subprocess.run(
        [sys.executable, "-m", "gpucenter.cli", "db", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_backup_restores_the_state_it_was_taken_in(settings: Settings, tmp_path: Path) -> None:
    ctx = make_context(settings)
    centre = seed_centre(ctx)
    target = tmp_path / "before.backup"
    made = _cli(settings, "backup", str(target))
    assert made.returncode == 0, made.stderr
    assert target.stat().st_size > 0

    jobs.submit(ctx, centre.alice, jobs.SubmitRequest(project="alpha", command="echo later"))
    with ctx.sessions.begin() as s:
        assert s.scalar(select(func.count()).select_from(JobRow)) == 1
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()

    refused = _cli(settings, "restore", str(target))
    assert refused.returncode == 2 and "--yes" in refused.stdout
    restored = _cli(settings, "restore", str(target), "--yes")
    assert restored.returncode == 0, restored.stderr

    after = make_context(settings)
    try:
        with after.sessions.begin() as s:
            assert s.scalar(select(func.count()).select_from(JobRow)) == 0
            names = set(s.scalars(select(ProjectRow.name)))
        assert names == {"alpha", "beta"}
    finally:
        after.dispatcher.shutdown()
        after.engine.dispose()


def test_restoring_something_that_is_not_a_backup_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.backup"
    junk.write_text("not a backup")
    with pytest.raises(ValidationError):
        backup.restore(settings.effective_database_url, junk)
    with pytest.raises(ValidationError):
        backup.restore(settings.effective_database_url, tmp_path / "missing.backup")
