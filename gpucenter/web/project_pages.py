"""Projects and their allocations: what was granted, what is used and left, how fast it
burns and when it runs out, with a burn-down chart against the pro-rata plan.

A member sees their own projects; a centre admin any. Another project's page is a 404,
the same answer as for one that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup

from gpucenter.auth.permissions import Permission
from gpucenter.http import csrf
from gpucenter.http.deps import Ctx, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.services.identity import sharing
from gpucenter.services.ops import overview, portal_queries
from gpucenter.web import charts, i18n, job_labels, render

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True, slots=True)
class BurnChart:
    """A burn-down ready to show: the chart and the same numbers as a table."""

    allocation_id: int
    svg: Markup
    rows: list[tuple[datetime, float, float]]


def burn_chart(request: Request, series: portal_queries.BurnSeries, zone: str) -> BurnChart:
    """GPU-hours left so far against the even-use plan, over the allocation's whole period
    (its start to its end), in the portal's zone."""
    title = render.t(request, "Remaining GPU-hours, allocation %(id)s") % {
        "id": series.allocation_id
    }
    actual = list(zip(series.instants, series.remaining, strict=True))
    start = series.starts_at or (series.instants[0] if series.instants else None)
    end = series.ends_at or (series.instants[-1] if series.instants else None)
    plan = [(start, series.budget), (end, 0.0)] if start and end and series.budget else []
    chart = charts.time_chart(
        title,
        [
            (render.t(request, "Remaining (actual)"), actual),
            (render.t(request, "Plan (even use)"), plan),
        ],
        lang=i18n.language_of(request),
        zone=i18n.display_zone(zone),
        zone_name=zone,
        y_title=render.t(request, "GPU-hours"),
        domain=(start, end) if start and end else None,
        time_title=render.t(request, "Time"),
    )
    rows = list(zip(series.instants, series.remaining, series.plan, strict=True))
    return BurnChart(series.allocation_id, chart, rows)


@router.get(
    "/projects", response_class=HTMLResponse, dependencies=[requires_web(Permission.PROJECTS_READ)]
)
def project_list(ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    return render.page(
        request,
        ctx,
        "projects/list.html",
        caller,
        projects=overview.my_projects(ctx, caller),
    )


@router.get(
    "/projects/{project_id}",
    response_class=HTMLResponse,
    dependencies=[requires_web(Permission.PROJECTS_READ)],
)
def project_detail(ctx: Ctx, request: Request, caller: WebCaller, project_id: int) -> HTMLResponse:
    page = portal_queries.project_page(ctx, caller, project_id)
    zone = ctx.settings.display_timezone
    return render.page(
        request,
        ctx,
        "projects/detail.html",
        caller,
        project=page.project,
        gpu_types=page.gpu_types,
        members=page.members,
        recent_jobs=page.recent_jobs,
        sharing=sharing.get_sharing(ctx, caller, project_id),
        charts=[burn_chart(request, b, zone) for b in page.burn],
        state_label=job_labels.state_label,
    )


@router.post(
    "/projects/{project_id}/sharing",
    dependencies=[requires_web(Permission.PROJECTS_WRITE)],
)
def project_sharing(
    ctx: Ctx,
    request: Request,
    caller: WebCaller,
    project_id: int,
    share_outputs: Annotated[str, Form(max_length=5)] = "",
    csrf_token: Annotated[str, Form(alias=csrf.FIELD)] = "",
) -> RedirectResponse:
    """The PI turns output sharing on or off (issue 17); audited by the service."""
    csrf.check(request, csrf_token)
    sharing.set_sharing(ctx, caller, project_id, share_outputs == "on")
    return RedirectResponse(f"/projects/{project_id}", status_code=303)
