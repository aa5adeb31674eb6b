"""Health, sign-in, the caller's identity, projects with allocations, and the site."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from gpucenter.api.deps import Ctx, CurrentCaller
from gpucenter.api.schemas import (
    AllocationOut,
    LoginIn,
    MeOut,
    NodeOut,
    ProjectOut,
    SiteOut,
    TokenOut,
)
from gpucenter.services import identity, overview

router = APIRouter()


@router.get("/healthz", tags=["health"])
def health(ctx: Ctx) -> dict[str, str]:
    with ctx.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return {"status": "ok", "site": ctx.site.site.name}


@router.post("/api/v1/auth/token", response_model=TokenOut, tags=["auth"])
def sign_in(body: LoginIn, ctx: Ctx) -> TokenOut:
    return TokenOut(token=identity.login(ctx, body.username, body.password))


@router.get("/api/v1/me", response_model=MeOut, tags=["auth"])
def me(caller: CurrentCaller) -> MeOut:
    return MeOut(
        id=caller.user_id,
        username=caller.username,
        is_admin=caller.is_admin,
        project_ids=sorted(caller.project_ids),
    )


@router.get("/api/v1/projects", response_model=list[ProjectOut], tags=["projects"])
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
                )
                for a in p.allocations
            ],
        )
        for p in overview.my_projects(ctx, caller)
    ]


@router.get("/api/v1/site", response_model=SiteOut, tags=["site"])
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
