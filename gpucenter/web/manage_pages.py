"""The programme manager's console: a call's applications and scores, reviewer assignment,
what-if optimiser runs with their explanation, and the decision.

A run decides nothing: the manager reads why each application won or lost (binding
capacity, share floors and ceilings, the score cut-off), may try another threshold, and
only then decides, which creates the projects and allocations in one transaction. Every
route checks the manager role for the call's programme in the services.
"""

from __future__ import annotations

from collections import defaultdict

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from gpucenter.auth.permissions import Caller, Permission
from gpucenter.domain.errors import Conflict, ValidationError
from gpucenter.http.deps import Ctx, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.services.awards import actions as award_actions
from gpucenter.services.context import AppContext
from gpucenter.services.programmes import actions, portal
from gpucenter.web import render
from gpucenter.web.i18n import N_
from gpucenter.web.programme_pages import (
    APPLICANT_TYPES,
    APPLICATION_STATES,
    CALL_STATES,
    FormFields,
    check_csrf,
    done,
    label,
    number,
)

router = APIRouter(include_in_schema=False)


@router.get(
    "/manage", response_class=HTMLResponse, dependencies=[requires_web(Permission.PROGRAMMES)]
)
def manage_home(ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    managed = portal.managed_calls(ctx, caller)
    return render.page(
        request,
        ctx,
        "programmes/manage.html",
        caller,
        managed=managed,
        call_states=CALL_STATES,
        label=label,
    )


def _call_page(
    ctx: AppContext,
    request: Request,
    caller: Caller,
    call_id: int,
    error: str = "",
    status: int = 200,
) -> HTMLResponse:
    page = portal.managed_call(ctx, caller, call_id)
    return render.page(
        request,
        ctx,
        "programmes/manage_call.html",
        caller,
        status,
        call=page.call,
        lines=page.lines,
        runs=page.runs,
        reviewers=page.reviewers,
        per_application=page.per_application,
        error=error,
        types=APPLICANT_TYPES,
        states=APPLICATION_STATES,
        label=label,
    )


@router.get(
    "/manage/calls/{call_id}",
    response_class=HTMLResponse,
    dependencies=[requires_web(Permission.PROGRAMMES)],
)
def manage_call(call_id: int, ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    return _call_page(ctx, request, caller, call_id)


@router.post("/manage/calls/{call_id}/assign", dependencies=[requires_web(Permission.PROGRAMMES)])
def assign(
    call_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    try:
        actions.assign_reviews(ctx, caller, call_id)
    except ValidationError as exc:
        return _call_page(ctx, request, caller, call_id, render.error_text(request, exc), 422)
    return done(f"/manage/calls/{call_id}", N_("Reviewers were assigned."))


@router.post("/manage/calls/{call_id}/runs", dependencies=[requires_web(Permission.PROGRAMMES)])
def run(
    call_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    """A what-if run; a threshold typed here applies to this run only."""
    check_csrf(request, fields)
    changes: dict[str, float] = {}
    typed = fields.get("min_score", "").strip()
    if typed:
        value = number(typed)
        if value is None or not 0 <= value <= 10:
            message = render.t(request, "Enter a score threshold from 0 to 10, or leave it empty.")
            return _call_page(ctx, request, caller, call_id, message, 422)
        changes["min_score"] = value
    try:
        run_id = actions.run_round(ctx, caller, call_id, policy_changes=changes).id
    except (ValidationError, Conflict) as exc:
        return _call_page(ctx, request, caller, call_id, render.error_text(request, exc), 409)
    return done(f"/manage/runs/{run_id}", N_("The optimiser ran. Nothing is decided yet."))


def _share_chart(result: dict[str, object]) -> tuple[list[str], list[tuple[str, list[float]]]]:
    shares = result.get("shares") or []
    assert isinstance(shares, list)
    names = [str(x["name"]) for x in shares]
    return names, [
        (N_("Awarded share"), [100 * float(x["share"]) for x in shares]),
        (N_("Policy floor"), [100 * float(x["min_share"] or 0) for x in shares]),
        (N_("Policy ceiling"), [100 * float(x["max_share"] or 0) for x in shares]),
    ]


def _run_page(
    ctx: AppContext,
    request: Request,
    caller: Caller,
    run_id: int,
    error: str = "",
    status: int = 200,
) -> HTMLResponse:
    page = portal.run_page(ctx, caller, run_id)
    row, view, lines = page.run, page.call, page.lines
    result = row.result
    by_type_asked: dict[str, float] = defaultdict(float)
    by_type_won: dict[str, float] = defaultdict(float)
    for app_id, (_app, kind, asked) in lines.items():
        by_type_asked[kind] += asked
        by_type_won[kind] += float(result["awards"].get(str(app_id), {}).get("gpu_hours", 0.0))
    kinds = [k for k in APPLICANT_TYPES if k in by_type_asked]
    t = render.t
    type_labels = [t(request, APPLICANT_TYPES[k]) for k in kinds]
    type_series = [
        (t(request, "Requested"), [by_type_asked[k] for k in kinds]),
        (t(request, "Awarded"), [by_type_won[k] for k in kinds]),
    ]
    share_names, share_series = _share_chart(result)
    return render.page(
        request,
        ctx,
        "programmes/manage_run.html",
        caller,
        status,
        run=row,
        result=result,
        call=view,
        lines=lines,
        error=error,
        type_labels=type_labels,
        type_series=type_series,
        type_rows=list(zip(type_labels, type_series[0][1], type_series[1][1], strict=True)),
        share_names=share_names,
        share_series=[(t(request, n), v) for n, v in share_series],
        types=APPLICANT_TYPES,
        label=label,
    )


@router.get(
    "/manage/runs/{run_id}",
    response_class=HTMLResponse,
    dependencies=[requires_web(Permission.PROGRAMMES)],
)
def manage_run(run_id: int, ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    return _run_page(ctx, request, caller, run_id)


@router.post("/manage/runs/{run_id}/decide", dependencies=[requires_web(Permission.PROGRAMMES)])
def decide(
    run_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    try:
        call_id = actions.get_run(ctx, caller, run_id).call_id
        award_actions.decide(ctx, caller, run_id, fields.get("reason", "")[:2000])
    except (ValidationError, Conflict) as exc:
        return _run_page(ctx, request, caller, run_id, render.error_text(request, exc), 409)
    return done(
        f"/manage/calls/{call_id}/awards",
        N_("The awards are decided: projects and allocations exist."),
    )
