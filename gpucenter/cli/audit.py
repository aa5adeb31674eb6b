"""`gpucenter audit ...`: read and verify the tamper-evident audit log, on the server host."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from gpucenter.cli.common import console, err_console, friendly_errors
from gpucenter.config import get_settings

app = typer.Typer(
    help="The audit log: list entries, verify the keyed hash chain, rotate its key.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command("verify")
def verify() -> None:
    """Walk the keyed hash chain and the head file kept outside the database; exit 1 and
    name the first entry altered or removed."""
    from gpucenter.persistence.db import make_engine, session_factory
    from gpucenter.services.identity import audit

    engine = make_engine(get_settings().effective_database_url)
    try:
        with friendly_errors(), session_factory(engine).begin() as s:
            result = audit.verify(s)
    finally:
        engine.dispose()
    if not result.ok:
        err_console.print(
            f"[bold red]audit log BROKEN[/] at entry {result.broken_at}: {result.problem}",
            highlight=False,
        )
        raise typer.Exit(1)
    console.print(f"audit log intact: {result.entries} entries", highlight=False)


@app.command("list")
def list_entries(limit: Annotated[int, typer.Option("--limit", "-n")] = 50) -> None:
    """The newest entries first."""
    from gpucenter.persistence.db import make_engine, session_factory
    from gpucenter.services.identity import audit

    engine = make_engine(get_settings().effective_database_url)
    table = Table("Id", "At", "Actor", "Action", "Target", "Details")
    try:
        with friendly_errors(), session_factory(engine).begin() as s:
            for e in audit.entries(s, limit=limit):
                table.add_row(
                    str(e.id),
                    f"{e.at:%Y-%m-%d %H:%M:%S}",
                    e.actor,
                    e.action,
                    f"{e.target_type}:{e.target_id}",
                    str(e.details)[:80],
                )
    finally:
        engine.dispose()
    console.print(table)


@app.command("rotate-key")
def rotate_key() -> None:
    """Take a new audit key into use (old ones stay, to verify what they signed); the change
    is recorded in the log. Run on the server host, as the server's user."""
    from datetime import UTC, datetime

    from gpucenter.persistence.db import make_engine, session_factory
    from gpucenter.services.identity import audit

    engine = make_engine(get_settings().effective_database_url)
    try:
        with friendly_errors(), session_factory(engine).begin() as s:
            key_id = audit.rotate_key(s, audit.SYSTEM, datetime.now(tz=UTC))
    finally:
        engine.dispose()
    console.print(f"audit key {key_id} in use", highlight=False)
