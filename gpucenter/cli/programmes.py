"""`gpucenter programme ...`: programme managers' and admins' commands, run on the server host.

Like `gpucenter admin`, these work on the database directly; `--as USER` says whose roles
apply (the services check them exactly as for the REST API), and every decision is audited
under that user.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from gpucenter.cli.common import AsUser, console, friendly_errors, run_as, utc_now

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from gpucenter.auth.permissions import Caller

app = typer.Typer(
    help="Allocation programmes: calls, applications, review and awards.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
T = TypeVar("T")


def _load(path: Path) -> dict[str, Any]:
    import yaml

    from gpucenter.domain.errors import ValidationError
    from gpucenter.domain.messages import msg

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        with friendly_errors():
            raise ValidationError.about(
                "file", msg("error.file_unreadable", path=str(path), problem=str(exc))
            ) from None
        raise
    if not isinstance(data, dict):
        with friendly_errors():
            raise ValidationError.about("file", msg("error.file_not_mapping", path=str(path)))
    return data


@app.command("create")
def create(
    name: str,
    owner: Annotated[str, typer.Option("--owner")],
    as_user: AsUser,
    title: Annotated[str, typer.Option("--title")] = "",
) -> None:
    """Create a programme owned by a ministry or agency (centre admins)."""
    from gpucenter.services.programmes import calls as prog

    pid = run_as(
        as_user, lambda s, c: prog.create_programme(s, c, name, owner, utc_now(), title).id
    )
    console.print(f"programme {pid} {name!r} created", highlight=False)


@app.command("assign-role")
def assign_role(
    programme_id: int,
    username: str,
    role: Annotated[str, typer.Option("--role", help="programme_manager|reviewer")],
    as_user: AsUser,
) -> None:
    """Make a user a programme manager (admins) or reviewer (admins or managers)."""
    from gpucenter.services.programmes import calls as prog

    run_as(as_user, lambda s, c: prog.assign_role(s, c, programme_id, username, role, utc_now()))
    console.print(f"{username} is now {role} of programme {programme_id}", highlight=False)


@app.command("open-call")
def open_call(programme_id: int, path: Path, as_user: AsUser) -> None:
    """Open a call from YAML: name, opens_at, closes_at, capacity{type:{quarter:GPU-h}}, config."""
    from gpucenter.services.programmes import calls as prog

    d = _load(path)
    spec = prog.CallSpec(
        str(d.get("name", "")),
        _dt(d.get("opens_at")),
        _dt(d.get("closes_at")),
        d.get("capacity") or {},
        str(d.get("title", "")),
        d.get("config"),
    )
    cid = run_as(as_user, lambda s, c: prog.create_call(s, c, programme_id, spec, utc_now()).id)
    console.print(f"call {cid} {spec.name!r} open", highlight=False)


def _dt(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command("apply")
def apply(
    call_id: int,
    path: Path,
    as_user: AsUser,
    submit: Annotated[bool, typer.Option("--submit/--draft")] = True,
) -> None:
    """Create an application from YAML (title, region, kind, requests or lease, ...)."""
    from gpucenter.services.programmes import applications as apps

    form = apps.ApplicationForm(**_load(path))

    def action(s: Session, c: Caller) -> int:
        row = apps.create_application(s, c, call_id, form, utc_now())
        if submit:
            apps.submit_application(s, c, row.id, utc_now())
        return row.id

    aid = run_as(as_user, action)
    console.print(f"application {aid} {'submitted' if submit else 'saved'}", highlight=False)


@app.command("assign-reviews")
def assign_reviews(call_id: int, as_user: AsUser) -> None:
    """Give each submitted application k conflict-free reviewers, balancing their load."""
    from gpucenter.services.programmes import applications as apps

    plan = run_as(as_user, lambda s, c: apps.assign_reviews(s, c, call_id, utc_now()))
    console.print(f"{len(plan)} applications have reviewers", highlight=False)


@app.command("review")
def review(
    app_id: int,
    as_user: AsUser,
    score: Annotated[list[str], typer.Option("--score", help="criterion=points")],
    comment: Annotated[str, typer.Option("--comment")] = "",
) -> None:
    """Score an assigned application against the call's rubric."""
    from gpucenter.services.programmes import applications as apps

    try:
        scores = {k: float(v) for k, v in (x.split("=", 1) for x in score)}
    except ValueError:
        raise typer.BadParameter("write scores as criterion=points") from None
    total = run_as(
        as_user, lambda s, c: apps.submit_review(s, c, app_id, scores, comment, utc_now()).total
    )
    console.print(f"review of application {app_id} submitted: {total:.2f}", highlight=False)


@app.command("optimise")
def optimise(
    call_id: int,
    as_user: AsUser,
    override: Annotated[
        list[str] | None,
        typer.Option("--override", help="APP_ID=GPU_HOURS (leases: GPUS); 0 rejects"),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="JSON of call settings to change for this what-if"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run the award optimiser as a what-if (nothing is decided); prints why it chose so."""
    from gpucenter.services.programmes import awards

    try:
        overrides = {int(k): float(v) for k, v in (x.split("=", 1) for x in override or [])}
        changes = json.loads(policy) if policy else None
    except ValueError:
        raise typer.BadParameter("overrides are APP_ID=AMOUNT; --policy is JSON") from None
    run = run_as(
        as_user,
        lambda s, c: _summary(
            awards.run_round(s, c, call_id, utc_now(), overrides=overrides, policy_changes=changes)
        ),
    )
    if as_json:
        console.print_json(json.dumps(run, default=str))
        return
    r = run["result"]
    console.print(
        f"run {run['id']}: {len(r['awards'])} awards, total score {r['objective']:,.0f} "
        f"(greedy {r['greedy_objective']:,.0f}), {r['method']}, gap {r['gap']:.3%}",
        highlight=False,
    )
    console.print(f"binding: {', '.join(r['binding']) or 'none'}", highlight=False)
    console.print(f"score cut-off: {r['cutoff_score']}", highlight=False)
    for app_id, why in sorted(r["reasons"].items(), key=lambda kv: int(kv[0]))[:50]:
        console.print(f"  application {app_id}: {why}", highlight=False)
    for v in r["violations"]:
        console.print(f"[yellow]departs from policy:[/] {v}", highlight=False)


def _summary(run: Any) -> dict[str, Any]:
    return {"id": run.id, "result": run.result}


@app.command("decide")
def decide(
    run_id: int, as_user: AsUser, reason: Annotated[str, typer.Option("--reason")] = ""
) -> None:
    """Decide a run: offers with agreements, projects with pending allocations (and leases),
    and the reserve list."""
    from gpucenter.services.awards import decision

    n = run_as(as_user, lambda s, c: len(decision.decide(s, c, run_id, utc_now(), reason)))
    console.print(f"run {run_id} decided: {n} awards", highlight=False)


@app.command("suspend")
def suspend(
    allocation_id: int,
    as_user: AsUser,
    reason: Annotated[str, typer.Option("--reason")],
    resume: Annotated[bool, typer.Option("--resume")] = False,
) -> None:
    """Suspend (or --resume) an awarded allocation; the reason goes to the audit log."""
    from gpucenter.services.programmes import awards

    state = run_as(
        as_user,
        lambda s, c: awards.set_suspended(s, c, allocation_id, not resume, reason, utc_now()).state,
    )
    console.print(f"allocation {allocation_id} is {state}", highlight=False)
