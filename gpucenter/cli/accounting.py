"""`gpucenter accounting ...`: budgets, the ledger, rate cards, reports and exports.

`budget` asks the API as the signed-in user (members see their own budgets). The other
commands run on the server host against the database, like `gpucenter programme`: `--as USER`
says whose roles apply, and the services check them exactly as for the REST API.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from gpucenter.cli.common import AsUser, api_call, console, emit, friendly_errors, run_as, utc_now
from gpucenter.config import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from gpucenter.auth.permissions import Caller

app = typer.Typer(
    help="Accounting: budgets, ledger adjustments, rate cards, reports and exports.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
T = TypeVar("T")
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, json, csv or xlsx")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="write the export here")]


def _output(records: list[dict[str, Any]], fmt: str, out: Path | None, name: str) -> None:
    """A rich table on the terminal, or the export bytes to --out (or stdout)."""
    from gpucenter.accounting.export import Format, render

    if fmt == "table":
        if not records:
            console.print("(no rows)")
            return
        table = Table(*records[0].keys())
        for r in records:
            table.add_row(*(f"{v:,.2f}" if isinstance(v, float) else str(v) for v in r.values()))
        console.print(table)
        return
    try:
        data = render(records, Format(fmt), name)
    except ValueError:
        raise typer.BadParameter("use table, json, csv or xlsx", param_hint="--format") from None
    if out is not None:
        out.write_bytes(data)
        console.print(f"wrote {len(records)} rows to {out}", highlight=False)
    elif fmt == "xlsx":
        raise typer.BadParameter("xlsx needs --out FILE", param_hint="--out")
    else:
        sys.stdout.write(data.decode("utf-8-sig") + "\n")


@app.command("budget")
def budget(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Your allocations' burn-down: used, left, burn rate, when it runs out, alerts."""
    with friendly_errors():
        rows = api_call("GET", "/api/v1/accounting/budgets")

    def show(data: list[dict[str, Any]]) -> None:
        table = Table("Alloc", "Project", "State", "GPU-h", "Used", "Left", "/day", "Runs out")
        for r in data:
            table.add_row(
                str(r["allocation_id"]),
                r["project"],
                r["state"],
                f"{r['budget_gpu_hours']:.1f}",
                f"{r['used_fraction']:.0%}",
                f"{r['remaining_gpu_hours']:.1f}",
                f"{r['burn_rate_gpu_hours_per_day']:.2f}",
                str(r["projected_exhaustion"] or "-")[:10],
            )
        console.print(table)

    emit(rows, as_json, show)


@app.command("report")
def report(
    as_user: AsUser,
    first: Annotated[str, typer.Option("--from", help="first month, YYYY-MM")],
    last: Annotated[str, typer.Option("--to", help="last month, YYYY-MM")],
    by: Annotated[str, typer.Option("--by", help="comma-separated dimensions")] = (
        "month,applicant_type"
    ),
    fmt: FormatOpt = "table",
    out: OutOpt = None,
) -> None:
    """GPU-hours and KRW by month, programme, call, applicant_type, organisation,
    strategic_field, site, gpu_type or project."""
    from gpucenter.accounting.report import parse_dimensions
    from gpucenter.services.accounting import reports

    with friendly_errors():
        dims = parse_dimensions(by.split(","))
    rows = run_as(as_user, lambda s, c: reports.usage_report(s, c, dims, first, last))
    _output([r.flat() for r in rows], fmt, out, "usage")


@app.command("statement")
def statement(
    as_user: AsUser,
    month: Annotated[str, typer.Option("--month", help="YYYY-MM")],
    fmt: FormatOpt = "table",
    out: OutOpt = None,
) -> None:
    """A site's (supplier's) monthly statement: GPU-hours delivered by type, for settlement."""
    from gpucenter.services.accounting import reports

    lines = run_as(as_user, lambda s, c: reports.supplier_statement(s, c, month))
    _output([{"month": month, **asdict(x)} for x in lines], fmt, out, f"statement-{month}")


@app.command("use")
def use(as_user: AsUser, flagged_only: Annotated[bool, typer.Option("--flagged")] = False) -> None:
    """Use it or lose it: each active allocation and lease against its pro-rata plan."""
    from gpucenter.services.accounting import useit

    rows = run_as(as_user, lambda s, c: useit.assess_use(s, c, utc_now()))
    _output([asdict(r) for r in rows if r.flagged or not flagged_only], "table", None, "use")


@app.command("reclaim")
def reclaim(
    as_user: AsUser,
    allocation: Annotated[int, typer.Argument()],
    gpu_hours: Annotated[float, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason")],
    offer_to: Annotated[int | None, typer.Option("--offer-to", help="application id")] = None,
) -> None:
    """Take unused GPU-hours back from an allocation (audited), optionally offering them."""
    from gpucenter.services.accounting import useit

    done = run_as(
        as_user,
        lambda s, c: useit.reclaim(s, c, allocation, gpu_hours, reason, utc_now(), offer_to),
    )
    console.print(
        f"reclaimed {done.gpu_hours:.1f} GPU-hours; allocation {done.allocation_id} now has "
        f"{done.new_budget_gpu_hours:.1f}",
        highlight=False,
    )


@app.command("refund")
def refund(
    as_user: AsUser,
    job: Annotated[int, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason")],
    run: Annotated[int | None, typer.Option("--run")] = None,
) -> None:
    """Refund what a job run was charged (a node failed under it); once per run."""
    from gpucenter.services.accounting import ledger

    done = run_as(as_user, lambda s, c: ledger.refund_job_run(s, c, job, run, reason, utc_now()))
    verb = "refunded" if done.created else "already refunded"
    console.print(f"{verb}: {-done.gpu_seconds / 3600:.3f} GPU-hours", highlight=False)


@app.command("rate")
def rate(
    as_user: AsUser,
    fiscal_year: Annotated[int, typer.Argument()],
    gpu_type: Annotated[str, typer.Argument()],
    krw_per_gpu_hour: Annotated[float, typer.Argument()],
    weight: Annotated[float, typer.Option("--weight", help="billing weight")] = 1.0,
) -> None:
    """Set the rate card of one GPU type for one fiscal year (centre admins)."""
    from gpucenter.accounting.rates import RateCard
    from gpucenter.services.accounting import ledger

    def action(s: Session, c: Caller) -> None:
        ledger.set_rate_card(
            s, c, RateCard(fiscal_year, gpu_type, krw_per_gpu_hour, weight), utc_now()
        )

    with friendly_errors():
        run_as(as_user, action)
    console.print(f"{fiscal_year} {gpu_type}: {krw_per_gpu_hour:,.0f} KRW/GPU-hour x{weight}")


@app.command("check-budgets")
def check_budgets() -> None:
    """Raise due budget alerts and enforce at 100% now (the scheduler loop does this too)."""
    from gpucenter.persistence.db import make_engine, session_factory
    from gpucenter.services.accounting import budgets

    engine = make_engine(get_settings().effective_database_url)
    try:
        with friendly_errors(), session_factory(engine).begin() as s:
            alerts = budgets.check_budgets(s, utc_now())
        mailer = budgets.SmtpMailer.from_env()
        sent = 0
        if mailer is not None:
            sent = budgets.deliver_email(session_factory(engine), mailer, utc_now(), mailer.domain)
    finally:
        engine.dispose()
    for a in alerts:
        console.print(
            f"allocation {a.allocation_id} ({a.project}) crossed {a.threshold}%: {a.action}",
            highlight=False,
        )
    console.print(f"{len(alerts)} new alert(s), {sent} e-mail(s) sent", highlight=False)
