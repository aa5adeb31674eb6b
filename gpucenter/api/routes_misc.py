"""Health, the caller's identity, projects with allocations, and the site."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict

from gpucenter.api.schemas import (
    AllocationOut,
    MeOut,
    NodeOut,
    ProjectOut,
    SiteOut,
    TemplateFieldOut,
    TemplateOut,
    UsageRowOut,
)
from gpucenter.auth.permissions import Permission
from gpucenter.domain.templates import JobTemplate
from gpucenter.http.deps import Ctx, CurrentCaller
from gpucenter.http.permissions import public, requires
from gpucenter.services.identity import sharing
from gpucenter.services.jobs import templates
from gpucenter.services.ops import overview, readiness

router = APIRouter()


@router.get("/healthz", tags=["health"], dependencies=[public()])
def health(ctx: Ctx) -> dict[str, str]:
    readiness.ping_database(ctx)
    return {"status": "ok", "site": ctx.site.site.name}


@router.get(
    "/api/v1/me",
    response_model=MeOut,
    tags=["auth"],
    dependencies=[requires(Permission.AUTHENTICATED)],
)
def me(caller: CurrentCaller) -> MeOut:
    return MeOut(
        id=caller.user_id,
        username=caller.username,
        is_admin=caller.is_admin,
        project_ids=sorted(caller.project_ids),
        roles=sorted(
            f"{role.value}@{scope}" if scope else role.value for role, scope in caller.roles
        ),
        scopes=sorted(caller.scopes) if caller.scopes is not None else None,
    )


@router.get(
    "/api/v1/projects",
    response_model=list[ProjectOut],
    tags=["projects"],
    dependencies=[requires(Permission.PROJECTS_READ)],
)
def projects(ctx: Ctx, caller: CurrentCaller) -> list[ProjectOut]:
    return [
        ProjectOut(
            id=p.id,
            name=p.name,
            title=p.title,
            allocations=[
                AllocationOut(
                    id=a.id,
                    gpu_hours=a.gpu_hours,
                    used_gpu_hours=a.used_gpu_hours,
                    remaining_gpu_hours=a.remaining_gpu_hours,
                    starts_at=a.starts_at,
                    ends_at=a.ends_at,
                    burn_rate_gpu_hours_per_day=a.burn_rate_gpu_hours_per_day,
                    projected_exhaustion=a.projected_exhaustion,
                )
                for a in p.allocations
            ],
        )
        for p in overview.my_projects(ctx, caller)
    ]


@router.get(
    "/api/v1/site",
    response_model=SiteOut,
    tags=["site"],
    dependencies=[requires(Permission.SITE_READ)],
)
def site(ctx: Ctx, caller: CurrentCaller) -> SiteOut:
    view = overview.site_overview(ctx)
    return SiteOut(
        name=view.name,
        nodes=[_node(n) for n in view.nodes],
        pending_jobs=view.pending_jobs,
        running_jobs=view.running_jobs,
    )


def _node(n: overview.NodeView) -> NodeOut:
    return NodeOut(
        name=n.name,
        gpu_type=n.gpu_type,
        gpu_count=n.gpu_count,
        gpus_busy=n.gpus_busy,
        block=n.block,
        virtual=n.virtual,
    )


def _template_out(t: JobTemplate) -> TemplateOut:
    return TemplateOut(
        name=t.name,
        title=t.title,
        description=t.description,
        fields=[
            TemplateFieldOut(
                name=f.name,
                type=f.type,
                label=f.label,
                required=f.required,
                default=f.default,
                minimum=f.minimum,
                maximum=f.maximum,
                choices=list(f.choices),
            )
            for f in t.fields
        ],
        job=dict(t.job),
    )


@router.get(
    "/api/v1/templates",
    response_model=list[TemplateOut],
    tags=["templates"],
    dependencies=[requires(Permission.TEMPLATES_READ)],
)
def list_job_templates(ctx: Ctx, caller: CurrentCaller) -> list[TemplateOut]:
    return [_template_out(t) for t in templates.list_templates(ctx)]


@router.put(
    "/api/v1/templates",
    response_model=TemplateOut,
    tags=["templates"],
    dependencies=[requires(Permission.TEMPLATES_PUBLISH)],
)
def publish_job_template(
    ctx: Ctx, caller: CurrentCaller, body: Annotated[dict[str, Any], Body()]
) -> TemplateOut:
    """Publish (or replace) a template: centre admins only."""
    return _template_out(templates.publish_as(ctx, caller, body))


@router.get(
    "/api/v1/usage",
    response_model=list[UsageRowOut],
    tags=["usage"],
    dependencies=[requires(Permission.USAGE_READ)],
)
def usage(
    ctx: Ctx,
    caller: CurrentCaller,
    since: Annotated[datetime | None, Query()] = None,
    until: Annotated[datetime | None, Query()] = None,
    project: Annotated[str | None, Query(max_length=100)] = None,
) -> list[UsageRowOut]:
    """GPU-hours charged by project, user and GPU type in [since, until)."""
    return [
        UsageRowOut(
            project=r.project,
            username=r.username,
            gpu_type=r.gpu_type,
            jobs=r.jobs,
            gpu_hours=r.gpu_hours,
        )
        for r in overview.usage(ctx, caller, since, until, project)
    ]


class SharingOut(BaseModel):
    project: str
    share_outputs: bool
    can_change: bool


class SharingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    share_outputs: bool


def _sharing_out(found: sharing.Sharing) -> SharingOut:
    return SharingOut(
        project=found.project, share_outputs=found.share_outputs, can_change=found.can_change
    )


@router.get(
    "/api/v1/projects/{project}/sharing",
    response_model=SharingOut,
    tags=["projects"],
    dependencies=[requires(Permission.PROJECTS_READ)],
)
def get_project_sharing(ctx: Ctx, caller: CurrentCaller, project: str) -> SharingOut:
    """Whether the project shares its jobs' outputs with its members (issue 17)."""
    return _sharing_out(sharing.get_sharing(ctx, caller, project))


@router.put(
    "/api/v1/projects/{project}/sharing",
    response_model=SharingOut,
    tags=["projects"],
    dependencies=[requires(Permission.PROJECTS_WRITE)],
)
def put_project_sharing(
    ctx: Ctx, caller: CurrentCaller, project: str, body: SharingIn
) -> SharingOut:
    """Turn output sharing on or off: the project's PI or a centre admin; audited. New runs'
    outputs are group-readable by the project (2750/0640) while it is on."""
    return _sharing_out(sharing.set_sharing(ctx, caller, project, body.share_outputs))
