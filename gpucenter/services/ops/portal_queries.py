"""Read models the web portal needs beyond the API's: a project's page, its burn-down over
time, the job's charge, the operator's heat map and queue, and a member's dashboard.

Kept apart from services/jobs.py and scheduling.py (the submission path) so the portal can
grow its views without touching the code that decides and writes. Every function that
returns tenant data checks visibility here, with the same rules as the API (auth.permissions),
so a page cannot show what the REST call for the same object would refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gpucenter.auth.permissions import Caller
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import NotFound
from gpucenter.domain.jobs import JobState
from gpucenter.persistence.tables import (
    AllocationRow,
    JobRow,
    LedgerEntryRow,
    MembershipRow,
    ProjectRow,
    UserRow,
)
from gpucenter.services.context import AppContext
from gpucenter.services.jobs.views import JobView, job_view
from gpucenter.services.ops import overview

BURN_POINTS = 12


@dataclass(frozen=True, slots=True)
class Member:
    username: str
    role: str


@dataclass(frozen=True, slots=True)
class BurnSeries:
    """Remaining GPU-hours of one allocation at evenly spaced instants, and the plan.

    The plan is pro rata: a budget spent evenly from the first to the last day.
    """

    allocation_id: int
    instants: list[datetime]
    remaining: list[float]
    plan: list[float]
    # The allocation's whole period and budget: a chart spans all of it, not only the part
    # used so far (a new allocation's first minutes are not its story).
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    budget: float = 0.0


@dataclass(frozen=True, slots=True)
class ProjectPage:
    project: overview.ProjectView
    gpu_types: dict[int, str]  # allocation id -> GPU type ('' for any)
    members: list[Member]
    recent_jobs: list[JobView]
    burn: list[BurnSeries]


def visible_project(caller: Caller, project_id: int) -> bool:
    return caller.is_admin or project_id in caller.project_ids


def project_page(ctx: AppContext, caller: Caller, project_id: int, jobs: int = 10) -> ProjectPage:
    """Everything the project page shows; NotFound for a project the caller is not in
    (whether it exists or not, so its existence does not leak)."""
    if not visible_project(caller, project_id):
        raise NotFound("project", project_id)
    view = next((p for p in overview.my_projects(ctx, caller) if p.id == project_id), None)
    if view is None:
        raise NotFound("project", project_id)
    now = ctx.now()
    with ctx.sessions.begin() as s:
        members = [
            Member(name, role)
            for name, role in s.execute(
                select(UserRow.username, MembershipRow.role)
                .join(MembershipRow, MembershipRow.user_id == UserRow.id)
                .where(MembershipRow.project_id == project_id)
                .order_by(MembershipRow.role.desc(), UserRow.username)
            )
        ]
        recent = [
            job_view(j)
            for j in s.scalars(
                select(JobRow)
                .where(JobRow.project_id == project_id)
                .order_by(JobRow.id.desc())
                .limit(jobs)
            )
        ]
        allocs = list(
            s.scalars(select(AllocationRow).where(AllocationRow.project_id == project_id))
        )
        types = {a.id: a.gpu_type or "" for a in allocs}
        burn = [_burn_series(s, a, now) for a in sorted(allocs, key=lambda a: a.id)]
    return ProjectPage(view, types, members, recent, burn)


def _burn_series(s: Session, alloc: AllocationRow, now: datetime) -> BurnSeries:
    start, end = as_utc(alloc.starts_at), as_utc(alloc.ends_at)
    last = min(max(now, start), end)
    entries = [
        (as_utc(at), float(secs))
        for at, secs in s.execute(
            select(LedgerEntryRow.created_at, LedgerEntryRow.gpu_seconds)
            .where(LedgerEntryRow.allocation_id == alloc.id)
            .order_by(LedgerEntryRow.created_at)
        )
    ]
    span = max((last - start).total_seconds(), 1.0)
    instants = [start + timedelta(seconds=span * i / (BURN_POINTS - 1)) for i in range(BURN_POINTS)]
    budget = alloc.gpu_seconds / 3600
    total_span = max((end - start).total_seconds(), 1.0)
    remaining: list[float] = []
    plan: list[float] = []
    for at in instants:
        used = sum(secs for when, secs in entries if when <= at) / 3600
        remaining.append(round(budget - used, 6))
        plan.append(round(budget * (1 - (at - start).total_seconds() / total_span), 6))
    return BurnSeries(alloc.id, instants, remaining, plan, start, end, budget)


def job_charge_gpu_hours(ctx: AppContext, caller: Caller, job: JobView) -> float | None:
    """GPU-hours charged for `job` (None before anything was charged). The caller must
    already have been allowed to see the job (jobs.get_visible)."""
    with ctx.sessions.begin() as s:
        total = s.scalar(
            select(func.sum(LedgerEntryRow.gpu_seconds)).where(LedgerEntryRow.job_id == job.id)
        )
    return None if total is None else float(total) / 3600


def project_names(ctx: AppContext, caller: Caller) -> list[tuple[int, str]]:
    """(id, name) of the projects the caller may submit to or filter by."""
    with ctx.sessions.begin() as s:
        stmt = select(ProjectRow.id, ProjectRow.name).order_by(ProjectRow.name)
        if not caller.is_admin:
            stmt = stmt.where(ProjectRow.id.in_(caller.project_ids))
        return [(int(i), str(n)) for i, n in s.execute(stmt)]


def project_name_map(ctx: AppContext, ids: Sequence[int]) -> dict[int, str]:
    if not ids:
        return {}
    with ctx.sessions.begin() as s:
        rows = s.execute(select(ProjectRow.id, ProjectRow.name).where(ProjectRow.id.in_(ids)))
        return {int(i): str(n) for i, n in rows}


# -- operators -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeatNode:
    name: str
    gpu_type: str
    gpu_count: int
    busy: int
    down: bool


@dataclass(frozen=True, slots=True)
class HeatBlock:
    block: str
    nodes: list[HeatNode]

    @property
    def busy(self) -> int:
        return sum(n.busy for n in self.nodes if not n.down)

    @property
    def total(self) -> int:
        return sum(n.gpu_count for n in self.nodes)

    @property
    def down(self) -> int:
        return sum(n.gpu_count for n in self.nodes if n.down)


@dataclass(frozen=True, slots=True)
class QueueLine:
    gpu_type: str
    pending_jobs: int
    pending_gpus: int
    running_jobs: int
    oldest_submitted: datetime | None


@dataclass(frozen=True, slots=True)
class SiteState:
    name: str
    kind: str
    failures: int
    last_error: str
    down_since: datetime | None


def heat_map(ctx: AppContext) -> list[HeatBlock]:
    """Every node's GPUs as busy, free or down, grouped by topology block. Aggregates only.

    A node counts as down while the dispatcher of its site keeps failing (the scheduler
    backs off from the whole site then, so none of its GPUs takes work)."""
    site = overview.site_overview(ctx)
    down_sites = {r.name for r in ctx.site_runtimes() if r.health.failures > 0}
    down_nodes = {
        n.name for r in ctx.site_runtimes() if r.name in down_sites for n in r.loaded.site.nodes
    }
    blocks: dict[str, list[HeatNode]] = {}
    for n in site.nodes:
        blocks.setdefault(n.block, []).append(
            HeatNode(n.name, n.gpu_type, n.gpu_count, n.gpus_busy, n.name in down_nodes)
        )
    return [HeatBlock(b, nodes) for b, nodes in sorted(blocks.items())]


def queue_by_gpu_type(ctx: AppContext) -> list[QueueLine]:
    """Pending and running jobs per GPU type, GPUs asked for and the longest wait."""
    with ctx.sessions.begin() as s:
        pending = {
            t: (int(n), int(g or 0), oldest)
            for t, n, g, oldest in s.execute(
                select(
                    JobRow.gpu_type,
                    func.count(),
                    func.sum(JobRow.gpus_per_node * JobRow.nodes),
                    func.min(JobRow.submitted_at),
                )
                .where(JobRow.state == JobState.PENDING.value)
                .group_by(JobRow.gpu_type)
            )
        }
        running = {
            t: int(n)
            for t, n in s.execute(
                select(JobRow.gpu_type, func.count())
                .where(JobRow.state == JobState.RUNNING.value)
                .group_by(JobRow.gpu_type)
            )
        }
    types = sorted(set(pending) | set(running) | set(ctx.site.site.gpu_types))
    lines = []
    for t in types:
        n, g, oldest = pending.get(t, (0, 0, None))
        lines.append(
            QueueLine(t, n, g, running.get(t, 0), as_utc(oldest) if oldest is not None else None)
        )
    return lines


def site_states(ctx: AppContext) -> list[SiteState]:
    return [
        SiteState(r.name, r.kind, r.health.failures, r.health.last_error, r.health.down_since)
        for r in ctx.site_runtimes()
    ]


# -- dashboard -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dashboard:
    running: list[JobView]
    pending: list[JobView]
    projects: list[overview.ProjectView]


def dashboard(ctx: AppContext, caller: Caller, limit: int = 10) -> Dashboard:
    """A member's own running and pending jobs and their projects' budgets."""
    with ctx.sessions.begin() as s:
        mine = [
            job_view(j)
            for j in s.scalars(
                select(JobRow)
                .where(
                    JobRow.user_id == caller.user_id,
                    JobRow.state.in_([JobState.RUNNING.value, JobState.PENDING.value]),
                )
                .order_by(JobRow.id.desc())
                .limit(limit * 2)
            )
        ]
    running = [j for j in mine if j.state == JobState.RUNNING.value][:limit]
    pending = [j for j in mine if j.state == JobState.PENDING.value][:limit]
    projects = [p for p in overview.my_projects(ctx, caller) if p.id in caller.project_ids]
    return Dashboard(running, pending, projects)


__all__ = [
    "BurnSeries",
    "Dashboard",
    "HeatBlock",
    "ProjectPage",
    "QueueLine",
    "dashboard",
    "heat_map",
    "job_charge_gpu_hours",
    "project_page",
    "queue_by_gpu_type",
]
