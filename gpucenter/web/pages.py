"""The front page: the site at a glance (aggregates only, nothing about any tenant)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from gpucenter.api.deps import Ctx
from gpucenter.api.permissions import public
from gpucenter.services import overview

router = APIRouter(include_in_schema=False)
_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)


@router.get("/", response_class=HTMLResponse, dependencies=[public()])
def index(ctx: Ctx, request: Request) -> HTMLResponse:
    view = overview.site_overview(ctx)
    total = sum(n.gpu_count for n in view.nodes)
    busy = sum(n.gpus_busy for n in view.nodes)
    html = _env.get_template("index.html").render(
        site=view, total=total, busy=busy, api_docs=str(request.url_for("swagger_ui_html"))
    )
    return HTMLResponse(html, headers={"X-Content-Type-Options": "nosniff"})
