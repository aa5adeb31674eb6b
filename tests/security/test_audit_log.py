"""The audit log is append-only and tamper-evident: `gpucenter audit verify` names the
first entry that was altered or removed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gpucenter.config import Settings
from gpucenter.services.identity import audit
from tests.factories import make_context, seed_centre


def _drop_guard(conn: object, dialect: str) -> None:
    """What an attacker with DDL rights would do first: remove the append-only triggers."""
    if dialect == "postgresql":
        conn.execute(text("DROP TRIGGER audit_log_append_only ON audit_log"))  # type: ignore[attr-defined]
    else:
        conn.execute(text("DROP TRIGGER audit_log_no_update"))  # type: ignore[attr-defined]
        conn.execute(text("DROP TRIGGER audit_log_no_delete"))  # type: ignore[attr-defined]


def _cli_verify(settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCENTER_")}
    env |= {
        "GPUCENTER_DATABASE_URL": settings.effective_database_url,
        "GPUCENTER_VAR_DIR": str(settings.var_dir),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "gpucenter.cli", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("tamper", ["alter", "delete_middle", "delete_last"])
def test_tampering_breaks_verify_and_names_the_entry(settings: Settings, tamper: str) -> None:
    ctx = make_context(settings)
    seed_centre(ctx)  # org, user, project, allocation and token creations are all audited
    with ctx.sessions.begin() as s:
        result = audit.verify(s)
        assert result.ok and result.entries >= 10
        ids = [row.id for row in audit.entries(s, limit=1000)]
    victim = {
        "alter": ids[len(ids) // 2],
        "delete_middle": ids[len(ids) // 2],
        "delete_last": ids[0],
    }[tamper]
    dialect = ctx.engine.dialect.name
    with pytest.raises(DBAPIError), ctx.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :i"), {"i": victim})
    with ctx.engine.begin() as conn:
        _drop_guard(conn, dialect)
        if tamper == "alter":
            conn.execute(
                text("UPDATE audit_log SET actor = 'mallory' WHERE id = :i"), {"i": victim}
            )
        else:
            conn.execute(text("DELETE FROM audit_log WHERE id = :i"), {"i": victim})
    with ctx.sessions.begin() as s:
        result = audit.verify(s)
    assert not result.ok
    if tamper == "alter":
        assert result.broken_at == victim and f"entry {victim} was altered" in result.problem
    else:
        assert f"entry {victim}" in result.problem, result.problem
    if dialect == "sqlite":
        cli = _cli_verify(settings)
        assert cli.returncode == 1 and f"entry {victim}" in cli.stderr, cli.stderr
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def test_verify_passes_on_an_intact_log_from_the_cli(settings: Settings, db_url: str) -> None:
    if not db_url.startswith("sqlite"):
        pytest.skip("one back end is enough for the CLI's happy path")
    ctx = make_context(settings)
    seed_centre(ctx)
    cli = _cli_verify(settings)
    assert cli.returncode == 0 and "intact" in cli.stdout, cli.stdout + cli.stderr
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()
