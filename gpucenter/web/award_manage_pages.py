"""The programme manager's after-award console: a call's awards and agreements, the reserve
list and re-offers of freed capacity (proposed by the optimiser, approved here), change
requests along their review paths, appeals and commercial-use flags, submitted reports, the
fast tier's queue, reviewer appointment, overrides of single awards; and the ministry's
outcome report.

Every action names a reason where it changes someone's award; the services check the
manager role for the call's programme and write the audit log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from gpucenter.accounting.export import MEDIA_TYPES, Format
from gpucenter.accounting.export import render as export
from gpucenter.allocation.outcomes import OutcomeDimension, parse_outcome_dimensions
from gpucenter.auth.permissions import Caller, Permission
from gpucenter.domain.errors import Conflict, NotFound, ValidationError
from gpucenter.domain.messages import msg
from gpucenter.http.deps import Ctx, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.services.awards import actions, portal
from gpucenter.services.context import AppContext
from gpucenter.services.programmes import actions as programme_actions
from gpucenter.services.programmes import portal as programme_portal
from gpucenter.web import award_labels as labels
from gpucenter.web import render
from gpucenter.web.award_pages import LABELS
from gpucenter.web.i18n import N_
from gpucenter.web.programme_pages import (
    APPLICANT_TYPES,
    REGIONS,
    STRATEGIC_FIELDS,
    FormFields,
    check_csrf,
    done,
    label,
    number,
)

router = APIRouter(include_in_schema=False)
NEED = [requires_web(Permission.PROGRAMMES)]


def _message(request: Request, exc: Exception) -> str:
    return render.error_text(request, exc)


def _call_page(
    ctx: AppContext,
    request: Request,
    caller: Caller,
    call_id: int,
    error: str = "",
    status: int = 200,
) -> HTMLResponse:
    page = portal.call_awards(ctx, caller, call_id)
    return render.page(
        request,
        ctx,
        "programmes/call_awards.html",
        caller,
        status,
        page=page,
        call=page.call,
        error=error,
        types=APPLICANT_TYPES,
        reserve_states=labels.RESERVE_STATES,
        label=label,
        **LABELS,
    )


def _back(fields: dict[str, str]) -> int:
    """The call page a form came from (a hidden field), checked to be a number."""
    value = number(fields.get("call", ""))
    if value is None or value != int(value):
        raise ValidationError.about("call", msg("error.form_lost_call"))
    return int(value)


@router.get("/manage/calls/{call_id}/awards", response_class=HTMLResponse, dependencies=NEED)
def call_awards(call_id: int, ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    return _call_page(ctx, request, caller, call_id)


def _act(
    ctx: AppContext,
    request: Request,
    caller: Caller,
    fields: dict[str, str],
    work: Callable[[], object],
    flash: str,
) -> Response:
    """Run `work` (a no-argument callable) for a form posted from a call's awards page;
    back to that page with `flash`, or the page again with the service's error."""
    check_csrf(request, fields)
    call_id = _back(fields)
    try:
        work()
    except (ValidationError, Conflict) as exc:
        status = 422 if isinstance(exc, ValidationError) else 409
        return _call_page(ctx, request, caller, call_id, _message(request, exc), status)
    return done(f"/manage/calls/{call_id}/awards", flash)


@router.post("/manage/calls/{call_id}/reoffer", dependencies=NEED)
def propose(
    call_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    try:
        run = actions.propose_reoffer(ctx, caller, call_id)
    except (ValidationError, Conflict) as exc:
        return _call_page(ctx, request, caller, call_id, _message(request, exc), 409)
    return done(
        f"/manage/reoffers/{run.id}",
        N_("The optimiser proposed a re-offer. Nothing is decided yet."),
    )


@router.get("/manage/reoffers/{run_id}", response_class=HTMLResponse, dependencies=NEED)
def reoffer(run_id: int, ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    return _reoffer_page(ctx, request, caller, run_id)


def _reoffer_page(
    ctx: AppContext,
    request: Request,
    caller: Caller,
    run_id: int,
    error: str = "",
    status: int = 200,
) -> HTMLResponse:
    page = programme_portal.run_page(ctx, caller, run_id)
    return render.page(
        request,
        ctx,
        "programmes/reoffer.html",
        caller,
        status,
        run=page.run,
        call=page.call,
        lines=page.lines,
        result=page.run.result,
        error=error,
        types=APPLICANT_TYPES,
        label=label,
    )


@router.post("/manage/reoffers/{run_id}/approve", dependencies=NEED)
def approve(
    run_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    try:
        made = actions.approve_reoffer(ctx, caller, run_id, fields.get("reason", "")[:2000])
    except (ValidationError, Conflict) as exc:
        return _reoffer_page(ctx, request, caller, run_id, _message(request, exc), 409)
    call_id = made[0].call_id if made else programme_actions.get_run(ctx, caller, run_id).call_id
    return done(
        f"/manage/calls/{call_id}/awards",
        N_("The re-offer is approved: the reserve applicants have offers."),
    )


@router.post("/manage/calls/{call_id}/reserve/close", dependencies=NEED)
def close_reserve(
    call_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    fields = {**fields, "call": str(call_id)}
    return _act(
        ctx,
        request,
        caller,
        fields,
        lambda: actions.close_reserve(ctx, caller, call_id),
        N_("The reserve list is closed."),
    )


@router.post("/manage/calls/{call_id}/reviewers", dependencies=NEED)
def appoint_reviewer(
    call_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    """Appoint a reviewer of the call's programme (managers appoint reviewers)."""
    check_csrf(request, fields)
    username = fields.get("username", "").strip()
    try:
        programme_actions.assign_role(
            ctx, caller, _programme_of(ctx, call_id), username, "reviewer"
        )
    except (ValidationError, Conflict, NotFound) as exc:
        return _call_page(ctx, request, caller, call_id, _message(request, exc), 422)
    page = f"/manage/calls/{call_id}" + ("" if fields.get("back") == "review" else "/awards")
    return done(page, N_("The reviewer was appointed."))


def _programme_of(ctx: AppContext, call_id: int) -> int:
    for call in programme_actions.list_calls(ctx):
        if call.id == call_id:
            return call.programme_id
    raise NotFound("call", call_id)


@router.post("/manage/requests/{request_id}/reviewer", dependencies=NEED)
def assign_request(
    request_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    username = fields.get("username", "").strip()
    return _act(
        ctx,
        request,
        caller,
        fields,
        lambda: actions.assign_request_reviewer(ctx, caller, request_id, username),
        N_("The reviewer was asked for a recommendation."),
    )


@router.post("/manage/requests/{request_id}/decide", dependencies=NEED)
def decide_request(
    request_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    approve_it = fields.get("verdict") == "approve"
    reason = fields.get("reason", "")[:2000]
    return _act(
        ctx,
        request,
        caller,
        fields,
        lambda: actions.decide_request(ctx, caller, request_id, approve_it, reason),
        N_("The request is decided."),
    )


@router.post("/manage/notices/{notice_id}/appeal", dependencies=NEED)
def decide_appeal(
    notice_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    grant = fields.get("verdict") == "grant"
    reason = fields.get("reason", "")[:2000]
    return _act(
        ctx,
        request,
        caller,
        fields,
        lambda: actions.decide_appeal(ctx, caller, notice_id, grant, reason),
        N_("The appeal is decided."),
    )


@router.post("/manage/notices/{notice_id}/commercial", dependencies=NEED)
def review_commercial(
    notice_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    confirm = fields.get("verdict") == "confirm"
    reason = fields.get("reason", "")[:2000]
    return _act(
        ctx,
        request,
        caller,
        fields,
        lambda: actions.review_commercial(ctx, caller, notice_id, confirm, reason),
        N_("The commercial-use flag is reviewed."),
    )


@router.post("/manage/reports/{report_id}/review", dependencies=NEED)
def review_report(
    report_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    accept = fields.get("verdict") == "accept"
    note = fields.get("note", "")[:2000]
    return _act(
        ctx,
        request,
        caller,
        fields,
        lambda: actions.review_report(ctx, caller, report_id, accept, note),
        N_("The report is reviewed."),
    )


@router.post("/manage/applications/{app_id}/fast", dependencies=NEED)
def decide_fast(
    app_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    approve_it = fields.get("verdict") == "approve"
    typed = fields.get("gpu_hours", "").strip()
    hours = number(typed) if typed else None
    reason = fields.get("reason", "")[:2000]
    return _act(
        ctx,
        request,
        caller,
        fields,
        lambda: actions.decide_fast(ctx, caller, app_id, approve_it, reason, hours),
        N_("The fast-tier application is decided."),
    )


@router.post("/manage/awards/{award_id}/override", dependencies=NEED)
def override(
    award_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    hours = number(fields.get("gpu_hours", ""))
    try:
        if hours is None:
            raise ValidationError.about("gpu_hours", msg("error.gpu_hours_number"))
        actions.override_award(ctx, caller, award_id, hours, fields.get("reason", "")[:2000])
    except (ValidationError, Conflict) as exc:
        return _award_error(ctx, request, caller, award_id, exc)
    return done(f"/awards/{award_id}", N_("The award was changed; the reason is in the audit log."))


@router.post("/manage/awards/{award_id}/flag", dependencies=NEED)
def flag(
    award_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    try:
        actions.flag_commercial(ctx, caller, award_id, fields.get("evidence", "")[:2000])
    except (ValidationError, Conflict) as exc:
        return _award_error(ctx, request, caller, award_id, exc)
    return done(f"/awards/{award_id}", N_("The award is flagged for review."))


def _award_error(
    ctx: AppContext, request: Request, caller: Caller, award_id: int, exc: Exception
) -> HTMLResponse:
    from gpucenter.web.award_pages import _award

    status = 422 if isinstance(exc, ValidationError) else 409
    return _award(ctx, request, caller, award_id, _message(request, exc), status)


@router.post("/manage/runs/{run_id}/override", dependencies=NEED)
def override_in_run(
    run_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    """Override one application's award in a round (before the decision): a new what-if run
    with this override added to the run's own, each with its reason."""
    check_csrf(request, fields)
    run = programme_actions.get_run(ctx, caller, run_id)
    app = number(fields.get("application", ""))
    hours = number(fields.get("gpu_hours", ""))
    reason = fields.get("reason", "").strip()[:2000]
    if app is None or hours is None or hours < 0 or not reason:
        return _run_error(
            ctx,
            request,
            caller,
            run_id,
            "Choose an application, enter its GPU-hours (0 rejects it) and say why.",
        )
    overrides = {int(k): float(v) for k, v in run.result.get("overrides", {}).items()}
    reasons = {int(k): str(v) for k, v in run.result.get("override_reasons", {}).items()}
    overrides[int(app)], reasons[int(app)] = hours, reason
    try:
        again = programme_actions.run_round(
            ctx,
            caller,
            run.call_id,
            overrides=overrides,
            override_reasons=reasons,
            policy_changes=run.result.get("policy_changes") or None,
        )
    except (ValidationError, Conflict) as exc:
        return _run_error(ctx, request, caller, run_id, _message(request, exc))
    return done(
        f"/manage/runs/{again.id}",
        N_("The award is overridden in a new run; decide it to keep it."),
    )


def _run_error(
    ctx: AppContext, request: Request, caller: Caller, run_id: int, message: str
) -> HTMLResponse:
    from gpucenter.web.manage_pages import _run_page

    return _run_page(ctx, request, caller, run_id, render.t(request, message), 422)


# -- the ministry's outcome report ---------------------------------------------------------


@router.get(
    "/reports/outcomes",
    response_class=HTMLResponse,
    dependencies=[requires_web(Permission.USAGE_READ)],
)
def outcome_report(
    ctx: Ctx,
    request: Request,
    caller: WebCaller,
    by: Annotated[str, Query(max_length=100)] = "programme,applicant_type,region,strategic_field",
) -> HTMLResponse:
    dims = _dims(by)
    rows = portal.outcome_rows(ctx, caller, dims)
    value_labels = {
        "applicant_type": APPLICANT_TYPES,
        "region": REGIONS,
        "strategic_field": STRATEGIC_FIELDS,
    }
    return render.page(
        request,
        ctx,
        "reports/outcomes.html",
        caller,
        rows=rows,
        dims=[d.value for d in dims],
        by=",".join(d.value for d in dims),
        dim_labels=labels.OUTCOME_DIMENSIONS,
        value_labels=value_labels,
        outcome_kinds=labels.OUTCOME_KINDS,
        formats=[f.value for f in Format],
        label=label,
    )


def _dims(by: str) -> list[OutcomeDimension]:
    try:
        return parse_outcome_dimensions(x for x in by.split(",") if x.strip()) or list(
            OutcomeDimension
        )
    except ValidationError:
        return list(OutcomeDimension)


@router.get("/reports/download/outcomes", dependencies=[requires_web(Permission.USAGE_READ)])
def download_outcomes(
    ctx: Ctx,
    caller: WebCaller,
    by: Annotated[str, Query(max_length=100)] = "programme,applicant_type,region,strategic_field",
    format: Format = Format.CSV,
) -> Response:
    records = portal.outcome_records(ctx, caller, _dims(by))
    return Response(
        export(records, format, "outcomes"),
        media_type=MEDIA_TYPES[format],
        headers={
            "Content-Disposition": f'attachment; filename="outcomes.{format.value}"',
            "Cache-Control": "no-store",
        },
    )
