"""An award's pages for its team, its organisation's signatory and its reviewers: the
agreement to accept (or countersign, or decline), the allocations, the reports to submit
on the programme's form, outcomes, change requests, appeals against a reclaim; and the
renewals a reviewer is asked to recommend.

Who may do what is the services' rule (an award is NotFound for anyone outside it); these
routes parse, call a service, and redirect with a message, or show the page again with the
service's error next to what was asked.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from gpucenter.allocation.outcomes import OutcomeInput
from gpucenter.auth.permissions import Caller, Permission
from gpucenter.domain.errors import Conflict, ValidationError
from gpucenter.http.deps import Ctx, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.services.awards import actions, portal
from gpucenter.services.context import AppContext
from gpucenter.web import award_labels as labels
from gpucenter.web import render
from gpucenter.web.i18n import N_
from gpucenter.web.programme_pages import FormFields, check_csrf, done, label, number

router = APIRouter(include_in_schema=False)
NEED = [requires_web(Permission.PROGRAMMES)]
LABELS: dict[str, Any] = {
    "award_states": labels.AWARD_STATES,
    "agreement_states": labels.AGREEMENT_STATES,
    "report_kinds": labels.REPORT_KINDS,
    "report_states": labels.REPORT_STATES,
    "notice_kinds": labels.NOTICE_KINDS,
    "notice_states": labels.NOTICE_STATES,
    "request_kinds": labels.REQUEST_KINDS,
    "request_states": labels.REQUEST_STATES,
    "outcome_kinds": labels.OUTCOME_KINDS,
    "allocation_states": labels.ALLOCATION_STATES,
    "uses": labels.PERMITTED_USES,
    "questions": labels.QUESTIONS,
}


@router.get("/awards", response_class=HTMLResponse, dependencies=NEED)
def my_awards(ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    rows = portal.my_awards(ctx, caller)
    return render.page(
        request, ctx, "programmes/awards.html", caller, rows=rows, label=label, **LABELS
    )


def _award(
    ctx: AppContext,
    request: Request,
    caller: Caller,
    award_id: int,
    error: str = "",
    status: int = 200,
) -> HTMLResponse:
    page = portal.award_page(ctx, caller, award_id)
    return render.page(
        request,
        ctx,
        "programmes/award.html",
        caller,
        status,
        page=page,
        award=page.award,
        error=error,
        label=label,
        **LABELS,
    )


@router.get("/awards/{award_id}", response_class=HTMLResponse, dependencies=NEED)
def award_page(award_id: int, ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    return _award(ctx, request, caller, award_id)


def _failed(
    ctx: AppContext, request: Request, caller: Caller, award_id: int, exc: Exception
) -> HTMLResponse:
    status = 422 if isinstance(exc, ValidationError) else 409
    return _award(ctx, request, caller, award_id, render.error_text(request, exc), status)


@router.post("/awards/{award_id}/accept", dependencies=NEED)
def accept(
    award_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    try:
        actions.accept(ctx, caller, award_id)
    except (ValidationError, Conflict) as exc:
        return _failed(ctx, request, caller, award_id, exc)
    return done(f"/awards/{award_id}", N_("You accepted the agreement."))


@router.post("/awards/{award_id}/countersign", dependencies=NEED)
def countersign(
    award_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    try:
        actions.countersign(ctx, caller, award_id)
    except (ValidationError, Conflict) as exc:
        return _failed(ctx, request, caller, award_id, exc)
    return done(f"/awards/{award_id}", N_("The agreement is countersigned and in force."))


@router.post("/awards/{award_id}/decline", dependencies=NEED)
def decline(
    award_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    try:
        actions.decline(ctx, caller, award_id, fields.get("reason", "")[:2000])
    except (ValidationError, Conflict) as exc:
        return _failed(ctx, request, caller, award_id, exc)
    return done(f"/awards/{award_id}", N_("The offer was declined."))


@router.post("/awards/{award_id}/reports/{report_id}", dependencies=NEED)
def submit_report(
    award_id: int, report_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    answers = {k[2:]: v for k, v in fields.items() if k.startswith("q_")}
    try:
        actions.submit_report(ctx, caller, report_id, answers)
    except (ValidationError, Conflict) as exc:
        return _failed(ctx, request, caller, award_id, exc)
    return done(f"/awards/{award_id}", N_("Your report was submitted."))


@router.post("/awards/{award_id}/outcomes", dependencies=NEED)
def record_outcome(
    award_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    count = number(fields.get("count", "") or "1")
    raw = OutcomeInput(
        fields.get("kind", ""),
        fields.get("title", ""),
        fields.get("identifier", ""),
        int(count) if count is not None and count == int(count) else 0,
    )
    try:
        actions.record_outcome(ctx, caller, award_id, raw)
    except (ValidationError, Conflict) as exc:
        return _failed(ctx, request, caller, award_id, exc)
    return done(f"/awards/{award_id}", N_("The outcome was recorded."))


@router.post("/awards/{award_id}/requests", dependencies=NEED)
def submit_request(
    award_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    keys = ("gpu_type", "period", "gpu_hours", "days", "from_type", "to_type")
    body = {k: fields[k] for k in keys if fields.get(k, "").strip()}
    try:
        actions.submit_request(
            ctx, caller, award_id, fields.get("kind", ""), body, fields.get("justification", "")
        )
    except (ValidationError, Conflict) as exc:
        return _failed(ctx, request, caller, award_id, exc)
    return done(f"/awards/{award_id}", N_("Your request was sent to the programme."))


@router.post("/awards/{award_id}/notices/{notice_id}/appeal", dependencies=NEED)
def appeal(
    award_id: int, notice_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    try:
        actions.appeal(ctx, caller, notice_id, fields.get("appeal", ""))
    except (ValidationError, Conflict) as exc:
        return _failed(ctx, request, caller, award_id, exc)
    return done(f"/awards/{award_id}", N_("Your appeal was sent to the programme manager."))


@router.get("/renewals", response_class=HTMLResponse, dependencies=NEED)
def renewals(ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    rows = portal.renewal_queue(ctx, caller)
    return render.page(
        request, ctx, "programmes/renewals.html", caller, rows=rows, label=label, **LABELS
    )


@router.post("/renewals/{request_id}", dependencies=NEED)
def recommend(
    request_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    approve = fields.get("verdict") == "approve"
    try:
        actions.recommend(ctx, caller, request_id, approve, fields.get("comment", ""))
    except (ValidationError, Conflict) as exc:
        rows = portal.renewal_queue(ctx, caller)
        return render.page(
            request,
            ctx,
            "programmes/renewals.html",
            caller,
            422,
            rows=rows,
            error=render.error_text(request, exc),
            label=label,
            **LABELS,
        )
    return done("/renewals", N_("Your recommendation was sent to the programme manager."))
