"""Read models: a project's allocations with usage, and the site at a glance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from gpucenter.auth.permissions import Caller
from gpucenter.domain.jobs import JobState
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import AllocationRow, JobRow, ProjectRow
from gpucenter.services.context import AppContext, as_utc


@dataclass(frozen=True, slots=True)
class AllocationView:
    id: int
    gpu_hours: float
    used_gpu_hours: float
    starts_at: datetime
    ends_at: datetime

    @property
    def remaining_gpu_hours(self) -> float:
        return self.gpu_hours - self.used_gpu_hours


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
        charged = repo.charged_gpu_seconds(s, [a.id for a in allocs])
        views = []
        for p in projects:
            views.append(
                ProjectView(
                    p.id,
                    p.name,
                    p.title,
                    [
                        AllocationView(
                            a.id,
                            a.gpu_seconds / 3600,
                            charged.get(a.id, 0.0) / 3600,
                            as_utc(a.starts_at),
                            as_utc(a.ends_at),
                        )
                        for a in allocs
                        if a.project_id == p.id
                    ],
                )
            )
        return views


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
