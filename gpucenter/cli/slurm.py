"""`gpucenter slurm ...`: a Slurm site's accounts, usage and node inventory, on the server host.

These talk to the database and to the Slurm tools directly (run them where ``sacctmgr`` and
``sacct`` work, as root or Slurm's operator). Site settings come from GPUCENTER_SLURM_*, or
with ``--site NAME`` from that Slurm site of the sites file (GPUCENTER_SITES_FILE).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from gpucenter.cli.common import console, fail, friendly_errors
from gpucenter.config import get_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from gpucenter.services.sites.slurm_settings import SlurmSettings

SiteOption = Annotated[
    str | None, typer.Option("--site", help="a Slurm site of the sites file (default: env)")
]


def _slurm_settings(site: str | None) -> SlurmSettings:
    """The named Slurm site's settings from the sites file, or GPUCENTER_SLURM_*; the job
    marker key where the server keeps it (under GPUCENTER_VAR_DIR) unless set."""
    from gpucenter.services.sites.slurm_settings import SlurmSettings
    from gpucenter.services.wiring import load_site_specs

    if site is None:
        return _with_marker_key(SlurmSettings())
    with friendly_errors():
        specs = load_site_specs(get_settings())
    for spec in specs:
        if spec.name == site and spec.slurm is not None:
            return _with_marker_key(spec.slurm)
    fail(f"no Slurm site {site!r} in the sites file")


def _with_marker_key(settings: SlurmSettings) -> SlurmSettings:
    from pathlib import Path

    if settings.marker_key_file is not None:
        return settings
    key_file = Path(get_settings().var_dir) / "secrets" / "slurm-marker.key"
    return settings.model_copy(update={"marker_key_file": key_file})


app = typer.Typer(
    help="Slurm site: account sync, usage ingest, node inventory.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _sessions() -> sessionmaker[Session]:
    from gpucenter.persistence.db import make_engine, session_factory

    return session_factory(make_engine(get_settings().effective_database_url))


@app.command("sync")
def sync(
    apply: Annotated[
        bool, typer.Option("--apply", help="run the commands (default: show)")
    ] = False,
    site: SiteOption = None,
) -> None:
    """Reconcile Slurm accounts, users, Fairshare and GrpTRESMins with gpucenter's database.

    Prints the exact sacctmgr commands that would make Slurm match; --apply runs them.
    """
    from gpucenter.domain.errors import SiteError
    from gpucenter.services.slurm.operator import apply_site_sync, plan_site_sync

    settings = _slurm_settings(site)
    with friendly_errors():
        try:
            plan = plan_site_sync(_sessions(), settings, datetime.now(tz=UTC))
            cluster, commands = plan.cluster, plan.commands
            for problem in plan.problems:
                console.print(f"left alone: {problem}", highlight=False, soft_wrap=True)
            if not commands:
                console.print(f"Slurm cluster {cluster} is in sync: nothing to change")
                return
            for command in commands:
                console.print(f"{command}    # {command.why}", highlight=False, soft_wrap=True)
            if not apply:
                console.print(f"{len(commands)} change(s); run with --apply to make them")
                return
            apply_site_sync(settings, plan)
        except SiteError as exc:
            fail(str(exc))
    console.print(f"applied {len(commands)} change(s) to {cluster}")


@app.command("usage")
def usage(
    hours: Annotated[float, typer.Option(help="read jobs of the last N hours")] = 48.0,
    site: SiteOption = None,
) -> None:
    """Charge ended Slurm jobs (allocated GPUs x elapsed) to the ledger; safe to repeat."""
    from gpucenter.domain.errors import SiteError
    from gpucenter.services.slurm.operator import ingest_site_usage

    now = datetime.now(tz=UTC)
    settings = _slurm_settings(site)
    with friendly_errors():
        try:
            since = now - timedelta(hours=hours)
            report = ingest_site_usage(_sessions(), settings, since, now)
        except SiteError as exc:
            fail(str(exc))
    console.print(
        f"charged {len(report.charged)} job(s), corrected {len(report.corrected)}, "
        f"flagged {len(report.flagged)}, "
        f"{report.already} already charged, {report.gpu_seconds / 3600:.2f} GPU-hours",
        highlight=False,
    )
    for job_id, why in report.skipped:
        console.print(f"  not charged: Slurm job {job_id}: {why}", highlight=False)


@app.command("site")
def site(
    name: Annotated[str, typer.Option(help="the site's name in gpucenter")] = "slurm",
    site: SiteOption = None,
) -> None:
    """Print a site file (YAML) for GPUCENTER_SITE_FILE from the cluster's nodes (sinfo)."""
    import yaml

    from gpucenter.domain.errors import SiteError
    from gpucenter.services.slurm.operator import describe_site

    settings = _slurm_settings(site)
    try:
        data = describe_site(settings, name)
    except SiteError as exc:
        fail(str(exc))
    console.print(yaml.safe_dump(data, sort_keys=False), end="", highlight=False)


@app.command("submit-rule")
def submit_rule(
    install: Annotated[
        bool,
        typer.Option(
            "--install",
            help="write job_submit.lua into slurm.conf's directory and mark this namespace "
            "as GPUCENTER_SLURM_OUTSIDE_SUBMISSIONS says (run on the controller, as root)",
        ),
    ] = False,
    conf_dir: Annotated[str, typer.Option(help="slurm.conf's directory")] = "/etc/slurm",
    site: SiteOption = None,
) -> None:
    """The submit rule that refuses jobs sent to a project's account outside gpucenter
    (slurm.conf: JobSubmitPlugins=lua). Without --install: print the script."""
    from pathlib import Path

    from gpucenter.services.slurm.sync import install_submit_rule, submit_rule_script

    settings = _slurm_settings(site)
    if not install:
        typer.echo(submit_rule_script(), nl=False)  # as it is: no wrapping
        return
    try:
        done = install_submit_rule(settings, Path(conf_dir))
    except OSError as exc:
        fail(f"cannot install the submit rule: {exc}")
    for line in done or ["nothing to change"]:
        console.print(line, highlight=False, markup=False)


@app.command("flags")
def flags(
    project: Annotated[str | None, typer.Option(help="only this project's")] = None,
) -> None:
    """Jobs run under a project's Slurm account outside gpucenter, as the usage ingest
    found and flagged them (charged, or not where the site says foreign_jobs: flag)."""
    from gpucenter.services.slurm.operator import outside_jobs

    found = outside_jobs(_sessions(), project)
    for job in found:
        console.print(
            f"{job.source}  {job.project or '?'}  {job.username or '?'}  "
            f"{job.gpu_hours:.3f} GPU-h  ended {job.ended_at:%Y-%m-%d %H:%M}  {job.reason}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    console.print(f"{len(found)} job(s) run outside gpucenter", highlight=False)
