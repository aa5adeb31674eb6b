"""`gpucenter db ...`: migrations, backups and restores, on SQLite or PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from gpucenter.cli.common import console, friendly_errors
from gpucenter.config import get_settings

app = typer.Typer(
    help="Database schema, backups and restores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command("upgrade")
def upgrade() -> None:
    """Apply every migration (SQLite or PostgreSQL, from GPUCENTER_DATABASE_URL)."""
    from gpucenter.persistence.db import migrate

    with friendly_errors():
        migrate(get_settings().effective_database_url)
    console.print("database is up to date", highlight=False)


@app.command("backup")
def backup(
    output: Annotated[Path | None, typer.Argument(help="file to write")] = None,
) -> None:
    """Write a consistent backup (the server may keep running)."""
    from gpucenter.persistence import backup as backups

    settings = get_settings()
    stamp = datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    target = output or settings.var_dir / "backups" / f"gpucenter-{stamp}.backup"
    with friendly_errors():
        written = backups.backup(settings.effective_database_url, target)
    console.print(f"backup written to {written}", highlight=False)


@app.command("restore")
def restore(
    source: Annotated[Path, typer.Argument(help="a file written by 'gpucenter db backup'")],
    yes: Annotated[bool, typer.Option("--yes", help="really replace the database")] = False,
) -> None:
    """Replace the database with a backup. Stop the server first."""
    from gpucenter.persistence import backup as backups
    from gpucenter.persistence.db import migrate

    settings = get_settings()
    if not yes:
        console.print("this replaces the whole database; run again with --yes to go ahead")
        raise typer.Exit(2)
    with friendly_errors():
        backups.restore(settings.effective_database_url, source)
        migrate(settings.effective_database_url)  # a backup from an older version moves up
    console.print(f"database restored from {source}", highlight=False)
