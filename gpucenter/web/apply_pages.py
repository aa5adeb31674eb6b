"""Open programmes and applying: the applicant's pages.

An applicant finds an open call, reads what it offers and to whom, and fills one form.
The form is checked here first, field by field and in the reader's language, so that the
common mistakes are explained next to the field; what only the services know (eligibility,
deadlines, duplicates) comes back as their errors, mapped to the field they name. Draft and
submission happen in one transaction: a submission the call refuses leaves nothing behind.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from gpucenter.allocation import BatchItem
from gpucenter.auth.permissions import Caller, Permission
from gpucenter.domain.errors import Conflict, NotFound, PermissionDenied, ValidationError
from gpucenter.domain.messages import msg
from gpucenter.http.deps import Ctx, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.services.context import AppContext
from gpucenter.services.programmes import actions, portal
from gpucenter.services.programmes import applications as apps
from gpucenter.services.programmes.views import ApplicationView, CallOverview
from gpucenter.web import render
from gpucenter.web.i18n import N_
from gpucenter.web.programme_pages import (
    APPLICANT_TYPES,
    APPLICATION_STATES,
    AWARD_KINDS,
    CALL_STATES,
    REGIONS,
    STRATEGIC_FIELDS,
    FormFields,
    check_csrf,
    done,
    label,
    number,
    options,
)

router = APIRouter(include_in_schema=False)
_USERNAME = re.compile(r"^[a-z][a-z0-9_.-]{1,63}$")
FIELDS = (
    "title",
    "plan",
    "team",
    "region",
    "field",
    "kind",
    "gpu_type",
    "period",
    "gpu_hours",
    "min_gpu_hours",
    "lease_gpus",
    "lease_start",
    "lease_end",
)
# Service error fields -> the form field that shows them ("call" is the form as a whole).
_FIELD_OF = {
    "title": "title",
    "region": "region",
    "tags": "field",
    "kind": "kind",
    "requests": "gpu_hours",
    "requests.gpu_type": "gpu_type",
    "requests.period": "period",
    "requests.gpu_hours": "gpu_hours",
    "min_gpu_hours": "min_gpu_hours",
    "lease": "lease_gpus",
    "lease.gpu_type": "gpu_type",
    "lease.gpus": "lease_gpus",
    "lease.starts_at": "lease_start",
}


@router.get(
    "/programmes", response_class=HTMLResponse, dependencies=[requires_web(Permission.PROGRAMMES)]
)
def programmes_page(ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    calls = portal.call_overviews(ctx)
    open_calls = [c for c in calls if c.state in ("open", "upcoming")]
    other = [c for c in calls if c.state not in ("open", "upcoming")]
    return render.page(
        request,
        ctx,
        "programmes/list.html",
        caller,
        open_calls=open_calls,
        other_calls=other,
        labels={"types": APPLICANT_TYPES, "states": CALL_STATES},
        label=label,
    )


@router.get(
    "/programmes/calls/{call_id}",
    response_class=HTMLResponse,
    dependencies=[requires_web(Permission.PROGRAMMES)],
)
def call_page(call_id: int, ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    page = portal.applicant_call(ctx, caller, call_id)
    return render.page(
        request,
        ctx,
        "programmes/call.html",
        caller,
        call=page.call,
        mine=page.mine,
        applicant_type=page.applicant_type,
        types=APPLICANT_TYPES,
        states=APPLICATION_STATES,
        call_states=CALL_STATES,
        kinds=AWARD_KINDS,
        label=label,
    )


def _form_page(
    ctx: AppContext,
    request: Request,
    caller: Caller,
    call_id: int,
    form: render.FormState,
    status: int = 200,
    editing: int = 0,
) -> HTMLResponse:
    """The application form for a call; with `editing`, the form of that draft."""
    call, kind = portal.apply_form(ctx, caller, call_id)
    return render.page(
        request,
        ctx,
        "programmes/apply.html",
        caller,
        status,
        call=call,
        form=form,
        applicant_type=kind,
        types=APPLICANT_TYPES,
        region_options=options(request, REGIONS),
        field_options=options(request, STRATEGIC_FIELDS, call.taxonomy),
        kind_options=options(request, AWARD_KINDS, call.kinds),
        gpu_options=[(g, g.upper()) for g in call.gpu_types],
        period_options=[(p, p) for p in call.periods],
        label=label,
        editing=editing,
    )


@router.get(
    "/programmes/calls/{call_id}/apply",
    response_class=HTMLResponse,
    dependencies=[requires_web(Permission.PROGRAMMES)],
)
def apply_form(call_id: int, ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    form = render.FormState.of({"kind": "gpu_hours"})
    return _form_page(ctx, request, caller, call_id, form)


def check_form(request: Request, call: CallOverview, form: render.FormState) -> None:
    """The checks a person can fix by looking at the form, in the reader's language."""
    v = form.value
    t = render.t
    if not v("title").strip():
        form.error("title", t(request, "Give the project a title."))
    elif len(v("title")) > 300:
        form.error("title", t(request, "Keep the title under 300 characters."))
    for name in v("team").replace(",", " ").split():
        if not _USERNAME.match(name):
            form.error("team", t(request, "List team members by their usernames."))
    if v("region") not in REGIONS:
        form.error("region", t(request, "Choose the region where the work is done."))
    if v("field") not in call.taxonomy:
        form.error("field", t(request, "Choose a strategic field."))
    if v("kind") not in call.kinds:
        form.error("kind", t(request, "Choose GPU-hours or a dedicated lease."))
    if v("gpu_type") not in call.gpu_types:
        form.error("gpu_type", t(request, "Choose a GPU type this call offers."))
    if v("kind") == "lease":
        gpus = number(v("lease_gpus"))
        if gpus is None or gpus < 1 or gpus != int(gpus):
            form.error("lease_gpus", t(request, "Enter a whole number of GPUs, at least 1."))
        start, end = _date(v("lease_start")), _date(v("lease_end"))
        if start is None:
            form.error("lease_start", t(request, "Enter the first day of the lease."))
        if end is None or (start is not None and end <= start):
            form.error("lease_end", t(request, "Enter a last day after the first day."))
        return
    if v("period") not in call.periods:
        form.error("period", t(request, "Choose a quarter this call offers."))
    hours = number(v("gpu_hours"))
    if hours is None or hours <= 0:
        form.error("gpu_hours", t(request, "Enter the GPU-hours as a number greater than 0."))
    least = number(v("min_gpu_hours"))
    if least is None or least <= 0 or (hours is not None and least > hours):
        form.error(
            "min_gpu_hours",
            t(request, "Enter a minimum greater than 0 and no more than the GPU-hours asked."),
        )


def _date(text: str) -> datetime | None:
    try:
        return datetime.strptime(text.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None


def application_of(form: render.FormState) -> apps.ApplicationForm:
    v = form.value
    lease = None
    requests: list[dict[str, object]] = []
    if v("kind") == "lease":
        start, last = _date(v("lease_start")), _date(v("lease_end"))
        assert start is not None and last is not None  # check_form made sure
        lease = {
            "gpu_type": v("gpu_type"),
            "gpus": int(number(v("lease_gpus")) or 0),
            "starts_at": start.isoformat(),
            # The form asks for the last day; the lease runs to the end of it.
            "ends_at": (last + timedelta(days=1)).isoformat(),
        }
    else:
        hours = number(v("gpu_hours")) or 0.0
        requests = [{"gpu_type": v("gpu_type"), "period": v("period"), "gpu_hours": hours}]
    return apps.ApplicationForm(
        title=v("title").strip(),
        region=v("region"),
        kind=v("kind"),
        plan=v("plan"),
        team=tuple(dict.fromkeys(v("team").replace(",", " ").split())),
        requests=requests,
        min_gpu_hours=0.0 if lease is not None else number(v("min_gpu_hours")) or 0.0,
        lease=lease,
        tags=(v("field"),),
    )


@router.post(
    "/programmes/calls/{call_id}/apply", dependencies=[requires_web(Permission.PROGRAMMES)]
)
def apply_submit(
    call_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    form = render.FormState.of({k: fields.get(k, "") for k in FIELDS})
    call = portal.call_overview(ctx, call_id)
    check_form(request, call, form)
    submit = fields.get("action") == "submit"
    app_id = 0
    if form.ok:
        try:
            made = actions.create_application(
                ctx, caller, call_id, application_of(form), submit=submit
            )
            app_id = made.id
        except ValidationError as exc:
            form.error(_FIELD_OF.get(exc.field, "call"), render.error_text(request, exc))
        except NotFound as exc:
            if exc.kind != "user":
                raise
            form.error("team", render.t(request, "A team member's username is not known."))
        except Conflict as exc:
            form.error("call", render.error_text(request, exc))
    if not form.ok:
        return _form_page(ctx, request, caller, call_id, form, 422)
    flash = N_("Your application was submitted.") if submit else N_("Your draft was saved.")
    return done(f"/applications/{app_id}", flash)


@router.get(
    "/applications", response_class=HTMLResponse, dependencies=[requires_web(Permission.PROGRAMMES)]
)
def my_applications(ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    rows = portal.my_applications(ctx, caller)
    return render.page(
        request,
        ctx,
        "programmes/applications.html",
        caller,
        rows=rows,
        states=APPLICATION_STATES,
        label=label,
    )


def _detail(
    ctx: AppContext,
    request: Request,
    caller: Caller,
    app_id: int,
    error: str = "",
    status: int = 200,
) -> HTMLResponse:
    page = portal.application_page(ctx, caller, app_id)
    return render.page(
        request,
        ctx,
        "programmes/application.html",
        caller,
        status,
        app=page.app,
        state=page.state,
        call=page.call,
        items=page.items,
        award=page.award,
        organisation=page.organisation,
        is_applicant=page.app.applicant_id == caller.user_id,
        error=error,
        states=APPLICATION_STATES,
        types=APPLICANT_TYPES,
        kinds=AWARD_KINDS,
        regions=REGIONS,
        fields=STRATEGIC_FIELDS,
        label=label,
    )


@router.get(
    "/applications/{app_id}",
    response_class=HTMLResponse,
    dependencies=[requires_web(Permission.PROGRAMMES)],
)
def application_page(app_id: int, ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    return _detail(ctx, request, caller, app_id)


@router.post("/applications/{app_id}/submit", dependencies=[requires_web(Permission.PROGRAMMES)])
def submit_application(
    app_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    try:
        actions.submit_application(ctx, caller, app_id)
    except ValidationError as exc:
        return _detail(ctx, request, caller, app_id, render.error_text(request, exc), 422)
    except Conflict as exc:
        return _detail(ctx, request, caller, app_id, render.error_text(request, exc), 409)
    return done(f"/applications/{app_id}", N_("Your application was submitted."))


@router.post("/applications/{app_id}/withdraw", dependencies=[requires_web(Permission.PROGRAMMES)])
def withdraw_application(
    app_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    try:
        actions.withdraw_application(ctx, caller, app_id)
    except Conflict as exc:
        return _detail(ctx, request, caller, app_id, render.error_text(request, exc), 409)
    return done(f"/applications/{app_id}", N_("Your application was withdrawn."))


def _values(app: ApplicationView, items: tuple[BatchItem, ...]) -> dict[str, object]:
    """A stored draft as the form's fields (the form asks for one request or one lease)."""
    lease = app.lease or {}
    first = items[0] if items else None
    last_day = str(lease.get("ends_at", ""))[:10]
    if last_day:
        last_day = (datetime.fromisoformat(last_day) - timedelta(days=1)).date().isoformat()
    return {
        "title": app.title,
        "plan": app.plan,
        "team": ", ".join(app.team),
        "region": app.region,
        "field": app.tags[0] if app.tags else "",
        "kind": app.kind,
        "gpu_type": lease.get("gpu_type") or (first.gpu_type if first else ""),
        "period": first.period if first else "",
        "gpu_hours": f"{first.gpu_hours:g}" if first else "",
        "min_gpu_hours": f"{app.min_gpu_hours:g}" if first else "",
        "lease_gpus": lease.get("gpus", ""),
        "lease_start": str(lease.get("starts_at", ""))[:10],
        "lease_end": last_day,
    }


@router.get(
    "/applications/{app_id}/edit",
    response_class=HTMLResponse,
    dependencies=[requires_web(Permission.PROGRAMMES)],
)
def edit_form(app_id: int, ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    page = portal.application_page(ctx, caller, app_id)
    if page.app.applicant_id != caller.user_id:
        # A reviewer or manager may read the application, never open its edit form.
        raise PermissionDenied.of(msg("error.applicant_only_edits"))
    if page.app.state != "draft":
        return _detail(
            ctx, request, caller, app_id, render.t(request, "Only a draft can be edited."), 409
        )
    form = render.FormState.of(_values(page.app, page.items))
    return _form_page(ctx, request, caller, page.app.call_id, form, editing=app_id)


@router.post("/applications/{app_id}/edit", dependencies=[requires_web(Permission.PROGRAMMES)])
def edit_submit(
    app_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    page = portal.application_page(ctx, caller, app_id)
    if page.app.applicant_id != caller.user_id:
        raise PermissionDenied.of(msg("error.applicant_only_edits"))
    call_id = page.app.call_id
    form = render.FormState.of({k: fields.get(k, "") for k in FIELDS})
    check_form(request, portal.call_overview(ctx, call_id), form)
    submit = fields.get("action") == "submit"
    if form.ok:
        try:
            actions.update_application(ctx, caller, app_id, application_of(form), submit=submit)
        except ValidationError as exc:
            form.error(_FIELD_OF.get(exc.field, "call"), render.error_text(request, exc))
        except NotFound as exc:
            if exc.kind != "user":
                raise
            form.error("team", render.t(request, "A team member's username is not known."))
        except Conflict as exc:
            form.error("call", render.error_text(request, exc))
    if not form.ok:
        return _form_page(ctx, request, caller, call_id, form, 422, editing=app_id)
    flash = N_("Your application was submitted.") if submit else N_("Your draft was saved.")
    return done(f"/applications/{app_id}", flash)
