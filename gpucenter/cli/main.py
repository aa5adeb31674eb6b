"""Entry point of the `gpucenter` command."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from gpucenter.cli import (
    accounting,
    admin,
    audit,
    awards,
    db,
    jobs,
    profiles,
    programmes,
    projects,
    sim,
    slurm,
    tokens,
)
from gpucenter.cli.common import (
    api_client,
    console,
    emit,
    err_console,
    fail,
    friendly_errors,
    say,
    tr,
    when,
)
from gpucenter.config import SettingsError, get_settings
from gpucenter.domain.messages import msg
from gpucenter.domain.text import control_character

if TYPE_CHECKING:
    from gpucenter.core import NodeSnapshot
    from gpucenter.services.ops.demo_history import Demand

app = typer.Typer(
    help="gpucenter: the control plane of a national AI computing centre.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
demo_app = typer.Typer(
    help="Demo data for a first look.", no_args_is_help=True, pretty_exceptions_enable=False
)
alloc_app = typer.Typer(
    help="Your allocations.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.add_typer(jobs.app, name="job")
app.add_typer(admin.app, name="admin")
app.add_typer(db.app, name="db")
app.add_typer(demo_app, name="demo")
app.add_typer(alloc_app, name="alloc")
app.add_typer(programmes.app, name="programme")
app.add_typer(sim.app, name="sim")
app.add_typer(slurm.app, name="slurm")
app.add_typer(audit.app, name="audit")
app.add_typer(tokens.app, name="token")
app.add_typer(projects.app, name="project")
app.add_typer(accounting.app, name="accounting")
app.add_typer(awards.app, name="award")


@app.callback()
def _everywhere(
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            envvar="GPUCENTER_PROFILE",
            help="the profile of the CLI's configuration file to use (server URL and token)",
        ),
    ] = None,
) -> None:
    """Before any command: the configuration file's profile fills in the settings no
    environment variable gives (see cli/profiles.py), so the CLI works from any directory."""
    if profile:
        os.environ["GPUCENTER_PROFILE"] = profile
    profiles.apply_to_environment(os.environ)
    get_settings.cache_clear()
    try:
        get_settings()  # every command reads them: a bad one is said once, here, not traced
    except SettingsError as exc:
        fail(say(msg("error.cli_settings", problem=exc.problems)), 2)


@demo_app.command("load")
def demo_load(
    empty: Annotated[
        bool,
        typer.Option(
            "--empty", help="only the demo user, project and templates: no months of history"
        ),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="the history's random seed")] = 7,
) -> None:
    """Create a demo centre (idempotent): the demo user and project, and unless --empty a
    few months of history. Signs the CLI in as the demo user (a profile in the CLI's
    configuration file, with this server's address)."""
    from gpucenter.services.ops.demo import load_demo

    settings = get_settings()
    with friendly_errors():
        result = load_demo(settings, None if empty else _replay_in_simulator, seed)
    if result.token:
        path = profiles.update(
            {
                "url": settings.api_url,
                "token": result.token,
                "username": result.username,
                "var_dir": str(settings.var_dir.resolve()),
                "database_url": os.environ.get("GPUCENTER_DATABASE_URL", ""),
            }
        )
        console.print(f"the CLI is signed in as {result.username} ({path})", highlight=False)
    console.print(result.summary, highlight=False)


def _replay_in_simulator(
    demands: Sequence[Demand], nodes: Sequence[NodeSnapshot], shares: Mapping[str, float]
) -> tuple[Sequence[float], Sequence[float]]:
    """The demo history's schedule, decided by the scheduling core through the simulator
    (the `ours` policy: the server's priorities, fair share and backfill)."""
    from gpucenter.sim.engine import simulate
    from gpucenter.sim.policies import make_policy
    from gpucenter.sim.traces.common import ApplicantType, TraceJob

    kinds = {
        "university": ApplicantType.UNIVERSITY,
        "public_research_institute": ApplicantType.INSTITUTE,
        "startup": ApplicantType.STARTUP,
        "sme": ApplicantType.SME,
    }
    trace = [
        TraceJob(
            k,
            d.submit_s,
            d.duration_s,
            d.gpus,
            nodes[0].gpu_type if nodes else None,
            d.project,
            kinds.get(d.applicant_type, ApplicantType.UNKNOWN),
            d.time_limit_s,
        )
        for k, d in enumerate(demands)
    ]
    result = simulate(trace, nodes, make_policy("ours"), shares=shares)
    return result.start, result.end


@app.command()
def serve(
    host: Annotated[str | None, typer.Option("--host")] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="API worker processes; with 2 or more the scheduler loop runs in a process of "
            "its own (the leader lock still lets exactly one process schedule)",
        ),
    ] = 1,
) -> None:
    """Run the API, the web page and the scheduler loop."""
    import uvicorn

    from gpucenter.app import create_app
    from gpucenter.services.wiring import build_context

    settings = get_settings()
    with friendly_errors():
        ctx = build_context(settings)
    bind_host = host or settings.host
    bind_port = port or settings.port
    _banner(bind_host, bind_port, settings.api_url)
    from gpucenter.logs import configure_json_logging

    configure_json_logging()  # structured logs with the request id, on stderr
    if workers == 1:
        from gpucenter.app import freeze_startup_heap

        app = create_app(ctx, warm=True)
        freeze_startup_heap()
        uvicorn.run(app, host=bind_host, port=bind_port, log_level="warning")
        return
    from gpucenter.services.wiring import ensure_site

    # Register the site once here, so that the workers do not race to create its rows.
    ensure_site(ctx)
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()
    scheduler = _start_dedicated_scheduler() if settings.scheduler_enabled else None
    try:
        uvicorn.run(
            "gpucenter.app:app_from_settings",
            factory=True,
            host=bind_host,
            port=bind_port,
            workers=workers,
            log_level="warning",
        )
    finally:
        if scheduler is not None:
            scheduler.terminate()
            scheduler.join(timeout=40)


def _banner(host: str, port: int, cli_url: str) -> None:
    """Say where the server really listens, and whether the CLI's settings point there."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}"
    console.print(f"gpucenter serving on {url}/", highlight=False)
    if cli_url.rstrip("/") != url:
        console.print(
            f"  note: the CLI here is set to {cli_url}; point it at this server with "
            f"'gpucenter login --url {url}' or GPUCENTER_API_URL={url}",
            highlight=False,
        )


def _start_dedicated_scheduler() -> Any:
    """With several API workers the scheduler loop gets a process of its own, started and
    given the leader lock (if no other server holds it) before the workers: a pass is
    CPU-bound Python, and in a worker it would hold up that worker's requests for as long
    as it runs. The workers' own loops stay followers, ready to take over."""
    import multiprocessing

    from gpucenter.services.scheduling.loop import run_dedicated

    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Event()
    process = spawn.Process(
        target=run_dedicated, args=(ready,), name="gpucenter-scheduler", daemon=True
    )
    process.start()
    ready.wait(60)
    return process


@app.command()
def login(
    username: Annotated[str, typer.Option(prompt=True)],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True)],
    code: Annotated[
        str | None, typer.Option("--code", help="TOTP code, if your account has a second factor")
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="the server, e.g. https://gpu.example.kr (default: as set)"),
    ] = None,
) -> None:
    """Sign in with a username and password; the server's URL and a new token go into the
    active profile of the CLI's configuration file, used from any directory."""
    from gpucenter.client import Client

    server = (url or get_settings().api_url).rstrip("/")
    with friendly_errors(), Client(server) as client:
        token = client.login(username, password, code)
    path = profiles.update({"url": server, "token": token, "username": username})
    console.print(f"signed in to {server} as {username} ({path})", highlight=False)


@alloc_app.command("show")
def alloc_show(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Your projects' allocations: granted, used and remaining GPU-hours."""
    with friendly_errors(), api_client() as client:
        projects = client.projects()

    def render(data: list[dict[str, Any]]) -> None:
        table = Table(
            *map(
                tr,
                (
                    "Project",
                    "Alloc",
                    "GPU-hours",
                    "Used",
                    "Remaining",
                    "Burn/day",
                    "Runs out",
                    "Ends",
                ),
            )
        )
        for p in data:
            for a in p["allocations"]:
                table.add_row(
                    p["name"],
                    str(a["id"]),
                    f"{a['gpu_hours']:.1f}",
                    f"{a['used_gpu_hours']:.4f}",
                    f"{a['remaining_gpu_hours']:.4f}",
                    f"{a['burn_rate_gpu_hours_per_day']:.3f}",
                    when(a["projected_exhaustion"]) if a["projected_exhaustion"] else "-",
                    when(a["ends_at"]),
                )
        console.print(table)

    emit(projects, as_json, render)


@app.command()
def usage(
    since: Annotated[str | None, typer.Option("--since", help="ISO date, e.g. 2026-11-01")] = None,
    until: Annotated[str | None, typer.Option("--until")] = None,
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """GPU-hours charged, by project, user and GPU type."""
    with friendly_errors(), api_client() as client:
        rows = client.usage(since, until, project)

    def render(data: list[dict[str, Any]]) -> None:
        table = Table(*map(tr, ("Project", "User", "GPU type", "Jobs", "GPU-hours")))
        for r in data:
            table.add_row(
                r["project"], r["username"], r["gpu_type"], str(r["jobs"]), f"{r['gpu_hours']:.4f}"
            )
        console.print(table)

    emit(rows, as_json, render)


def main() -> None:
    for n, argument in enumerate(sys.argv[1:], start=1):
        char = control_character(argument)
        if char is not None:
            shown = argument.encode("unicode_escape").decode()[:60]
            err_console.print(
                f"[bold red]error:[/] argument {n} ({shown}) contains the control character "
                f"{char}; only printable text, tabs and line ends are accepted",
                highlight=False,
            )
            raise SystemExit(2)
    try:
        app()
    except KeyboardInterrupt:
        fail("interrupted", 130)
