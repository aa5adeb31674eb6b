"""Read models: a project's allocations with usage, and the site at a glance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from gpucenter.accounting.budget import project_exhaustion
from gpucenter.auth.permissions import Caller
from gpucenter.domain.clock import as_utc
from gpucenter.domain.jobs import JobState
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import (
    AllocationRow,
    JobRow,
    LedgerEntryRow,
    ProjectRow,
    UserRow,
)
from gpucenter.services.context import AppContext

BURN_WINDOW = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class AllocationView:
    id: int
    gpu_hours: float
    used_gpu_hours: float
    starts_at: datetime
    ends_at: datetime
    burn_rate_gpu_hours_per_day: float = 0.0
    projected_exhaustion: datetime | None = None

    @property
    def remaining_gpu_hours(self) -> float:
        return self.gpu_hours - self.used_gpu_hours


def burn_rate(
    charged_in_window_s: float, running_in_window_s: float, window: timedelta = BURN_WINDOW
) -> float:
    """GPU-hours per day over the window: charges plus what running jobs used in it."""
    return (charged_in_window_s + running_in_window_s) / 3600 / (window.total_seconds() / 86400)


@dataclass(frozen=True, slots=True)
class ProjectView:
    id: int
    name: str
    title: str
    allocations: list[AllocationView]


def my_projects(ctx: AppContext, caller: Caller) -> list[ProjectView]:
    with ctx.sessions.begin() as s:
        stmt = select(ProjectRow).order_by(ProjectRow.name)
        if not caller.is_admin:
            stmt = stmt.where(ProjectRow.id.in_(caller.project_ids))
        projects = s.scalars(stmt).all()
        allocs = s.scalars(
            select(AllocationRow)
            .where(AllocationRow.project_id.in_([p.id for p in projects]))
            .order_by(AllocationRow.id)
        ).all()
        ids = [a.id for a in allocs]
        charged = repo.charged_gpu_seconds(s, ids)
        now = ctx.now()
        window_start = now - BURN_WINDOW
        recent = repo.charged_gpu_seconds(s, ids, since=window_start)
        running_use: dict[int, float] = {}
        for job in repo.jobs_in_states(s, [JobState.RUNNING]):
            if job.allocation_id in ids and job.started_at is not None:
                start = max(as_utc(job.started_at), window_start)
                seconds = max(0.0, (now - start).total_seconds()) * job.gpus_per_node * job.nodes
                running_use[job.allocation_id] = running_use.get(job.allocation_id, 0.0) + seconds
        views = []
        for p in projects:
            views.append(
                ProjectView(
                    p.id,
                    p.name,
                    p.title,
                    [
                        _allocation_view(
                            a,
                            charged.get(a.id, 0.0),
                            recent.get(a.id, 0.0),
                            running_use.get(a.id, 0.0),
                            now,
                        )
                        for a in allocs
                        if a.project_id == p.id
                    ],
                )
            )
        return views


def _allocation_view(
    row: AllocationRow, charged_s: float, recent_s: float, running_s: float, now: datetime
) -> AllocationView:
    total = row.gpu_seconds / 3600
    used = charged_s / 3600
    rate = burn_rate(recent_s, running_s)
    ends = as_utc(row.ends_at)
    return AllocationView(
        row.id,
        total,
        used,
        as_utc(row.starts_at),
        ends,
        rate,
        project_exhaustion(total - used - running_s / 3600, rate, now, ends),
    )


@dataclass(frozen=True, slots=True)
class UsageRow:
    project: str
    username: str
    gpu_type: str
    jobs: int
    gpu_hours: float


def usage(
    ctx: AppContext,
    caller: Caller,
    since: datetime | None = None,
    until: datetime | None = None,
    project: str | None = None,
) -> list[UsageRow]:
    """GPU-hours charged, by project, user and GPU type, for what the caller may see."""
    with ctx.sessions.begin() as s:
        stmt = (
            select(
                ProjectRow.name,
                UserRow.username,
                LedgerEntryRow.gpu_type,
                func.count(LedgerEntryRow.id),
                func.sum(LedgerEntryRow.gpu_seconds),
            )
            .join(JobRow, JobRow.id == LedgerEntryRow.job_id)
            .join(ProjectRow, ProjectRow.id == JobRow.project_id)
            .join(UserRow, UserRow.id == JobRow.user_id)
            .group_by(ProjectRow.name, UserRow.username, LedgerEntryRow.gpu_type)
            .order_by(ProjectRow.name, UserRow.username, LedgerEntryRow.gpu_type)
        )
        if not caller.is_admin:
            stmt = stmt.where(JobRow.project_id.in_(caller.project_ids))
        if since is not None:
            stmt = stmt.where(LedgerEntryRow.created_at >= since)
        if until is not None:
            stmt = stmt.where(LedgerEntryRow.created_at < until)
        if project is not None:
            stmt = stmt.where(ProjectRow.name == project)
        return [
            UsageRow(p, u, g, int(n), float(total or 0.0) / 3600)
            for p, u, g, n, total in s.execute(stmt)
        ]


@dataclass(frozen=True, slots=True)
class NodeView:
    name: str
    gpu_type: str
    gpu_count: int
    gpus_busy: int
    block: str
    virtual: bool


@dataclass(frozen=True, slots=True)
class SiteView:
    name: str
    nodes: list[NodeView]
    pending_jobs: int
    running_jobs: int


def site_overview(ctx: AppContext) -> SiteView:
    """Aggregates only: no job, user or project of any tenant is named here."""
    with ctx.sessions.begin() as s:
        site = repo.site_by_name(s, ctx.site.site.name)
        nodes = repo.nodes_of(s, site.id) if site else []
        busy: dict[str, int] = {}
        for row in repo.jobs_in_states(s, [JobState.RUNNING]):
            for part in row.placement or []:
                busy[part["node"]] = busy.get(part["node"], 0) + len(part["gpus"])
        counts = dict(
            s.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).tuples().all()
        )
        return SiteView(
            ctx.site.site.name,
            [
                NodeView(n.name, n.gpu_type, n.gpu_count, busy.get(n.name, 0), n.block, n.virtual)
                for n in nodes
            ],
            int(counts.get(JobState.PENDING.value, 0)),
            int(counts.get(JobState.RUNNING.value, 0)),
        )


__all__ = [
    "NodeView",
    "ProjectView",
    "my_projects",
    "site_overview",
    "usage",
]
