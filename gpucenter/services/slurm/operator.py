"""What an operator runs by hand against a Slurm site (`gpucenter slurm ...`): the account
sync's plan and its application, a usage ingest, and a site file read from the cluster.

Why here and not in the CLI: the CLI never touches a cluster itself (an import-linter
contract), so that every way of talking to Slurm goes through the services, with the same
settings and the same errors. A failure of the cluster's tools is raised as the domain's
`SiteError` with the tool's own message, so the CLI says it without knowing dispatch/.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gpucenter.dispatch.base import DispatchError
from gpucenter.dispatch.slurm.accounts import SyncCommand, apply_sync
from gpucenter.domain.errors import SiteError
from gpucenter.services.sites.slurm_settings import SlurmSettings
from gpucenter.services.slurm.ingest import IngestReport, ingest_records
from gpucenter.services.slurm.sync import sync_site
from gpucenter.services.slurm.usage import read_usage


@contextmanager
def _site_errors() -> Iterator[None]:
    """The cluster's failures as `SiteError`, message unchanged."""
    try:
        yield
    except DispatchError as exc:
        raise SiteError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """The sacctmgr commands that make `cluster` match gpucenter's database, in order, and
    what the sync leaves alone (a name taken outside gpucenter's tree, say)."""

    cluster: str
    commands: tuple[SyncCommand, ...]
    problems: tuple[str, ...] = ()


def plan_site_sync(
    sessions: sessionmaker[Session], settings: SlurmSettings, now: datetime
) -> SyncPlan:
    """Desired state from the database, actual state from sacctmgr, and the difference: the
    same plan the scheduler leader's periodic sync applies."""
    from gpucenter.dispatch.slurm.dispatcher import cluster_name

    with _site_errors():
        cluster = settings.cluster or cluster_name(settings.cli())
        planned = sync_site(sessions, settings, now, apply=False)
    return SyncPlan(cluster, tuple(planned.commands), tuple(planned.problems))


def apply_site_sync(settings: SlurmSettings, plan: SyncPlan) -> list[str]:
    """Run every command of the plan; those that fail are raised together at the end
    (`SiteError`), after the rest have run."""
    with _site_errors():
        return apply_sync(settings.cli(), plan.commands)


def ingest_site_usage(
    sessions: sessionmaker[Session], settings: SlurmSettings, since: datetime, now: datetime
) -> IngestReport:
    """Charge the jobs that ended in [since, now] (sacct) to the ledger; safe to repeat (each
    Slurm job is charged once per cluster, whichever reader saw it first). The leader's
    scheduled ingest reads from its cursor instead; this one reads the window asked for."""
    with _site_errors():
        records = read_usage(settings.cli(), since, now)
        with sessions.begin() as s:
            return ingest_records(
                s,
                records,
                now,
                top=settings.top_account,
                foreign_jobs=settings.foreign_jobs,
                marker_key=settings.marker_key(),
            )


def describe_site(settings: SlurmSettings, name: str) -> dict[str, Any]:
    """A site file (the mapping GPUCENTER_SITE_FILE holds) from the cluster's GPU nodes."""
    from gpucenter.dispatch.slurm.dispatcher import read_site

    with _site_errors():
        nodes = read_site(settings.cli(), settings.partition)
    return {
        "site": name,
        "nodes": [
            {"name": n.name, "gpus": n.gpu_count, "gpu_type": n.gpu_type, "block": n.block}
            for n in nodes
        ],
    }


__all__ = [
    "SyncPlan",
    "apply_site_sync",
    "describe_site",
    "ingest_site_usage",
    "plan_site_sync",
]


@dataclass(frozen=True, slots=True)
class OutsideJob:
    """A Slurm job found run under a project's account outside gpucenter (usage_flags)."""

    source: str
    project: str
    account: str
    username: str
    gpu_hours: float
    ended_at: datetime
    reason: str


def outside_jobs(sessions: sessionmaker[Session], project: str | None = None) -> list[OutsideJob]:
    """The outside submissions the usage ingest flagged, newest first (one project's, or
    all): what ``gpucenter slurm flags`` lists for the centre's operators."""
    from sqlalchemy import select

    from gpucenter.persistence.tables import ProjectRow
    from gpucenter.persistence.tables_ops import UsageFlagRow

    stmt = (
        select(UsageFlagRow, ProjectRow.name)
        .outerjoin(ProjectRow, ProjectRow.id == UsageFlagRow.project_id)
        .order_by(UsageFlagRow.ended_at.desc(), UsageFlagRow.id.desc())
    )
    if project is not None:
        stmt = stmt.where(ProjectRow.name == project)
    with sessions() as s:
        return [
            OutsideJob(
                flag.source,
                name or "",
                flag.account,
                flag.username,
                flag.gpu_seconds / 3600,
                flag.ended_at,
                flag.reason,
            )
            for flag, name in s.execute(stmt).tuples()
        ]
