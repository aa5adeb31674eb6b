"""`gpucenter award ...`: a research team's awards from the command line, through the API.

Why: a PI who lives in a terminal learns of an offer from the e-mail and should not need
the portal to answer it. These are the same REST routes the portal's award page posts to
(`/api/v1/awards/...`), with the signed-in token, so the same rules and audit apply: only
the PI accepts or declines, only the organisation's signatory countersigns, and anyone
else gets the API's own refusal.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from gpucenter.cli.common import api_call, console, emit, friendly_errors, tr

app = typer.Typer(
    help="Your awards: see them, accept or decline an offer, countersign.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

AsJson = Annotated[bool, typer.Option("--json", help="print the API's JSON")]


def _award_row(item: dict[str, Any]) -> list[str]:
    award = item["award"]
    respond_by = str(item.get("respond_by") or "-")[:16].replace("T", " ")
    return [
        str(award["id"]),
        str(item.get("title") or ""),
        tr(str(award["state"])),
        f"{float(award['gpu_hours']):,.0f}",
        tr(str(item.get("agreement_state") or "-")),
        respond_by,
        tr("countersign") if item.get("as_signatory") else "",
    ]


@app.command("list")
def list_awards(as_json: AsJson = False) -> None:
    """Awards of your projects and applications (and those waiting for your countersignature)."""
    with friendly_errors():
        items = api_call("GET", "/api/v1/awards")

    def show(data: list[dict[str, Any]]) -> None:
        table = Table(
            tr("ID"), tr("Title"), tr("State"), tr("GPU-hours"), tr("Agreement"),
            tr("Respond by"), "",
        )  # fmt: skip
        for item in data:
            table.add_row(*_award_row(item))
        console.print(table)

    emit(items, as_json, show)


@app.command("show")
def show_award(award_id: int, as_json: AsJson = False) -> None:
    """One award: its state, agreement, allocations and what is due."""
    with friendly_errors():
        page = api_call("GET", f"/api/v1/awards/{award_id}")

    def show(data: dict[str, Any]) -> None:
        award = data["award"]
        console.print(f"[bold]{data.get('title', '')}[/] ({tr('ID')} {award['id']})")
        console.print(f"{tr('State')}: {tr(str(award['state']))}")
        console.print(f"{tr('Project')}: {data.get('project', '')}")
        console.print(f"{tr('GPU-hours')}: {float(award['gpu_hours']):,.0f}")
        agreement = data.get("agreement") or {}
        if agreement:
            console.print(f"{tr('Agreement')}: {tr(str(agreement.get('state', '-')))}")
        for line in data.get("allocations") or []:
            console.print(
                f"  {tr('Alloc')} {line.get('id')}: {tr(str(line.get('state', '')))}, "
                f"{float(line.get('used_gpu_hours') or 0):,.1f} / "
                f"{float(line.get('gpu_hours') or 0):,.0f} {tr('GPU-hours')}"
            )

    emit(page, as_json, show)


def _act(path: str, as_json: bool, said: str, body: dict[str, Any] | None = None) -> None:
    with friendly_errors():
        result = api_call("POST", path, json=body) if body else api_call("POST", path)
    emit(result, as_json, lambda data: console.print(f"{tr(said)}: {data.get('state', '')}"))


@app.command("accept")
def accept(award_id: int, as_json: AsJson = False) -> None:
    """Accept an offered award (its PI): its allocations start once the agreement holds."""
    _act(f"/api/v1/awards/{award_id}/accept", as_json, "Accepted")


@app.command("decline")
def decline(
    award_id: int,
    reason: Annotated[str, typer.Option("--reason", help="why (shown to the programme)")],
    as_json: AsJson = False,
) -> None:
    """Decline an offered award (its PI), saying why; its GPU-hours go back to the call."""
    _act(f"/api/v1/awards/{award_id}/decline", as_json, "Declined", {"reason": reason})


@app.command("countersign")
def countersign(award_id: int, as_json: AsJson = False) -> None:
    """Countersign an award's agreement for your organisation (its signatory)."""
    _act(f"/api/v1/awards/{award_id}/countersign", as_json, "Countersigned")
