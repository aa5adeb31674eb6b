"""The site operator's page: every GPU as a square (busy, free, down) grouped by topology
block, the queue per GPU type, and the health of the server and its sites.

Aggregates only: no job, user or project is named, so an operator sees load, not tenants.
Open to site operators and centre admins (the same rule as the operators' metrics).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from gpucenter.auth.permissions import Permission
from gpucenter.http.deps import Ctx, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.services.accounting.reports import require_operator
from gpucenter.services.ops import portal_queries
from gpucenter.services.ops.readiness import check_readiness
from gpucenter.web import render
from gpucenter.web.i18n import N_

router = APIRouter(include_in_schema=False)

CHECK_LABELS = {
    "database": N_("Database"),
    "migrations": N_("Database schema"),
    "site": N_("Site registered"),
    "scheduler": N_("Scheduler"),
}
GPU_STATES = {"busy": N_("Busy"), "free": N_("Free"), "down": N_("Down")}


def _scheduler_role(request: Request) -> str:
    loop = getattr(request.app.state, "loop", None)
    if loop is None:
        return "disabled"
    if not loop.running:
        return "stopped"
    return "leader" if loop.is_leader else "follower (another server schedules)"


@router.get("/ops", response_class=HTMLResponse, dependencies=[requires_web(Permission.SITE_READ)])
def operations(ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    require_operator(caller)
    blocks = portal_queries.heat_map(ctx)
    return render.page(
        request,
        ctx,
        "ops/index.html",
        caller,
        blocks=blocks,
        busy=sum(b.busy for b in blocks),
        total=sum(b.total for b in blocks),
        down=sum(b.down for b in blocks),
        queue=portal_queries.queue_by_gpu_type(ctx),
        checks=check_readiness(ctx, _scheduler_role(request)),
        check_labels=CHECK_LABELS,
        sites=portal_queries.site_states(ctx),
        gpu_words={k: render.t(request, v) for k, v in GPU_STATES.items()},
    )
