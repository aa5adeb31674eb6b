"""`gpucenter token ...`: your API tokens (list, create scoped ones, revoke), over the API."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from gpucenter.cli.common import api_call, console, emit, friendly_errors

app = typer.Typer(
    help="Your API tokens: list, create (scoped, expiring), revoke.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command("list")
def token_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Your live tokens, with scopes, expiry and last use (never the secrets)."""
    with friendly_errors():
        rows = api_call("GET", "/api/v1/tokens")

    def render(data: list[dict[str, Any]]) -> None:
        table = Table("Id", "Name", "Scopes", "Expires", "Last used")
        for t in data:
            scopes = ", ".join(t["scopes"]) if t["scopes"] is not None else "(all)"
            table.add_row(
                str(t["id"]),
                t["name"],
                scopes,
                str(t["expires_at"] or "-")[:16],
                str(t["last_used_at"] or "never")[:16],
            )
        console.print(table)

    emit(rows, as_json, render)


@app.command("create")
def token_create(
    scope: Annotated[list[str], typer.Option("--scope", "-s", help="e.g. jobs:read; repeat")],
    name: Annotated[str, typer.Option("--name")] = "",
    days: Annotated[int, typer.Option("--days")] = 30,
) -> None:
    """Create a scoped token; its secret is printed this once."""
    with friendly_errors():
        made = api_call(
            "POST", "/api/v1/tokens", json={"name": name, "scopes": scope, "days": days}
        )
    console.print(f"token {made['id']} ({', '.join(made['scopes'])}) until {made['expires_at']}")
    console.print(f"secret (shown once): {made['token']}", highlight=False, soft_wrap=True)


@app.command("revoke")
def token_revoke(token_id: int) -> None:
    """Revoke a token at once."""
    with friendly_errors():
        api_call("DELETE", f"/api/v1/tokens/{token_id}")
    console.print(f"token {token_id} revoked", highlight=False)
