"""`gpucenter project ...`: a project's settings, over the API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from gpucenter.cli.common import api_call, console, emit, friendly_errors, say
from gpucenter.domain.messages import msg

app = typer.Typer(
    help="A project's settings (output sharing).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _group() -> None:
    """A project's settings (output sharing)."""


@app.command("sharing")
def sharing(
    project: str,
    share: Annotated[
        bool | None,
        typer.Option(
            "--on/--off",
            help="share new jobs' outputs (and logs) with the project's members, or stop; "
            "the PI only. Without either: show the setting",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Whether a project's jobs' outputs are readable by its other members: group-readable
    run directories (2750/0640) and their logs through the API. Off by default."""
    path = f"/api/v1/projects/{project}/sharing"
    with friendly_errors():
        if share is None:
            found = api_call("GET", path)
        else:
            found = api_call("PUT", path, json={"share_outputs": share})

    def render(data: dict[str, Any]) -> None:
        code = "project.sharing_on" if data["share_outputs"] else "project.sharing_off"
        console.print(say(msg(code, project=data["project"])), highlight=False)

    emit(found, as_json, render)
