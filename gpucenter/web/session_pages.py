"""The interactive sessions page: start one, its card (GPUs, time left, cost so far), stop it,
and choose which members of its project may use it.

Routes are thin: the rules (who may see, share and stop a session; what its command is) are in
services/sessions. The session itself is reached through `session_proxy`.
"""

from __future__ import annotations

import contextlib
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gpucenter.auth.permissions import Caller, Permission
from gpucenter.domain.errors import Conflict, ValidationError
from gpucenter.domain.sessions import KINDS, base_url, kind_named
from gpucenter.http import csrf
from gpucenter.http.deps import Ctx, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.services.context import AppContext
from gpucenter.services.ops import portal_queries
from gpucenter.services.sessions import manage as sessions
from gpucenter.web import job_labels, render
from gpucenter.web.i18n import N_

router = APIRouter(include_in_schema=False)

REQUESTED = N_("Session requested: it starts when its GPUs are free.")
STOPPING = N_("The session is stopping.")
SHARED = N_("Sharing of the session was changed.")


async def _posted(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


Posted = Annotated[dict[str, str], Depends(_posted)]


def _back(flash: str) -> RedirectResponse:
    return RedirectResponse(f"/sessions?flash={quote(flash)}", status_code=303)


def _poke(request: Request) -> None:
    loop = getattr(request.app.state, "loop", None)
    if loop is not None:
        loop.poke()


def _page(
    request: Request,
    ctx: AppContext,
    caller: Caller,
    form: render.FormState,
    status: int = 200,
) -> HTMLResponse:
    return render.page(
        request,
        ctx,
        "sessions/index.html",
        caller,
        status,
        form=form,
        cards=sessions.cards(ctx, caller),
        enabled=bool(ctx.settings.session_python),
        kinds=[(k.name, k.title) for k in KINDS.values()],
        projects=[(n, n) for _, n in portal_queries.project_names(ctx, caller)],
        gpu_types=[(t, t) for t in sorted(ctx.site.site.gpu_types)],
        state_labels={k: render.t(request, job_labels.state_label(k)) for k in _STATES},
        base_url=base_url,
    )


_STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED")


@router.get(
    "/sessions", response_class=HTMLResponse, dependencies=[requires_web(Permission.JOBS_READ)]
)
def session_list(
    ctx: Ctx,
    request: Request,
    caller: WebCaller,
    project: Annotated[str, Query(max_length=100)] = "",
) -> HTMLResponse:
    mine = portal_queries.project_names(ctx, caller)
    values = {"kind": next(iter(KINDS)), "gpus": "1", "time": "1h", "project": project}
    if not project and mine:
        values["project"] = mine[0][1]
    return _page(request, ctx, caller, render.FormState.of(values))


@router.post("/sessions/new", dependencies=[requires_web(Permission.JOBS_SUBMIT)])
def start_session(ctx: Ctx, request: Request, caller: WebCaller, posted: Posted) -> Response:
    csrf.check(request, posted.get(csrf.FIELD, ""))
    keep = ("kind", "project", "gpus", "time", "gpu_type")
    form = render.FormState.of({k: posted.get(k, "") for k in keep})
    gpus = form.value("gpus")
    if not gpus.isdigit() or int(gpus) < 1:
        form.error("gpus", render.t(request, "Give a whole number of GPUs, at least 1."))
    if form.ok:
        try:
            sessions.start(
                ctx,
                caller,
                kind_named(form.value("kind")),
                form.value("project"),
                int(gpus),
                form.value("time") or "1h",
                form.value("gpu_type") or None,
            )
        except (ValidationError, Conflict) as exc:
            field = exc.field if isinstance(exc, ValidationError) else "project"
            field = {"time_limit": "time", "time_limit_s": "time", "gpus_per_node": "gpus"}.get(
                field, field
            )
            form.error(field if field in keep else "kind", render.error_text(request, exc))
        else:
            _poke(request)
            return _back(REQUESTED)
    return _page(request, ctx, caller, form, status=422)


@router.post("/sessions/{job_id}/stop", dependencies=[requires_web(Permission.JOBS_CANCEL)])
def stop_session(
    ctx: Ctx, request: Request, caller: WebCaller, job_id: int, posted: Posted
) -> Response:
    csrf.check(request, posted.get(csrf.FIELD, ""))
    with contextlib.suppress(Conflict):  # already ended: the card says so
        sessions.stop(ctx, caller, job_id)
    _poke(request)
    return _back(STOPPING)


@router.post("/sessions/{job_id}/share", dependencies=[requires_web(Permission.JOBS_SUBMIT)])
def share_session(
    ctx: Ctx, request: Request, caller: WebCaller, job_id: int, posted: Posted
) -> Response:
    csrf.check(request, posted.get(csrf.FIELD, ""))
    sessions.set_shared(
        ctx, caller, job_id, posted.get("username", ""), posted.get("allow", "") == "1"
    )
    return _back(SHARED)
