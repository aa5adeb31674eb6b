"""Projects and their allocations: what was granted, what is used and left, how fast it
burns and when it runs out, with a burn-down chart against the pro-rata plan.

A member sees their own projects; a centre admin any. Another project's page is a 404,
the same answer as for one that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from gpucenter.auth.permissions import Permission
from gpucenter.http.deps import Ctx, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.services.ops import overview, portal_queries
from gpucenter.web import charts, i18n, job_labels, render

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True, slots=True)
class BurnChart:
    """A burn-down ready to show: the SVG and the same numbers as a table."""

    allocation_id: int
    svg: Markup
    rows: list[tuple[datetime, float, float]]


def _labels(instants: list[datetime], zone_name: str) -> list[str]:
    zone = i18n.display_zone(zone_name)
    local = [t.astimezone(zone) for t in instants]
    span = (instants[-1] - instants[0]).total_seconds() if instants else 0.0
    # The finest unit that still tells the points apart: seconds for a new allocation.
    pattern = "%H:%M:%S" if span < 7200 else "%H:%M" if span < 2 * 86400 else "%m-%d"
    return [t.strftime(pattern) for t in local]


def burn_chart(request: Request, series: portal_queries.BurnSeries, zone: str) -> BurnChart:
    title = render.t(request, "Remaining GPU-hours, allocation %(id)s") % {
        "id": series.allocation_id
    }
    svg = charts.line_chart(
        title,
        _labels(series.instants, zone),
        [
            (render.t(request, "Remaining (actual)"), series.remaining),
            (render.t(request, "Plan (even use)"), series.plan),
        ],
    )
    rows = list(zip(series.instants, series.remaining, series.plan, strict=True))
    return BurnChart(series.allocation_id, svg, rows)


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
        charts=[burn_chart(request, b, zone) for b in page.burn],
        state_label=job_labels.state_label,
    )
