"""Open programmes and applying: the applicant's pages.

An applicant finds an open call, reads what it offers and to whom, and fills one form.
The form is checked here first, field by field and in the reader's language, so that the
common mistakes are explained next to the field; what only the services know (eligibility,
deadlines, duplicates) comes back as their errors, mapped to the field they name. Draft and
submission happen in one transaction: a submission the call refuses leaves nothing behind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from gpucenter.auth.permissions import Caller, Permission
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import Conflict, NotFound, ValidationError
from gpucenter.http.deps import Ctx, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.persistence.tables import OrganisationRow, UserRow
from gpucenter.persistence.tables_allocation import CallRow
from gpucenter.services.context import AppContext
from gpucenter.services.programmes import applications as apps
from gpucenter.services.programmes import awards
from gpucenter.services.programmes import calls as prog
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
    tx,
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


@dataclass(frozen=True)
class CallView:
    """A call as the applicant reads it: what it offers, until when, and to whom."""

    id: int
    programme: str
    owner: str
    title: str
    opens_at: datetime
    closes_at: datetime
    state: str
    gpu_types: list[str]
    periods: list[str]
    eligible: list[str]
    kinds: list[str]
    taxonomy: list[str]
    max_gpu_hours: float | None
    capacity: dict[tuple[str, str], float]


def call_state(call: CallRow, now: datetime) -> str:
    if call.state == "decided":
        return "decided"
    if now < as_utc(call.opens_at):
        return "upcoming"
    return "open" if now < as_utc(call.closes_at) else "closed"


def call_view(s: Session, call: CallRow, now: datetime) -> CallView:
    p = prog.programme(s, call.programme_id)
    cap = prog.capacity_of(s, call.id)
    cfg = call.config
    return CallView(
        call.id,
        p.title or p.name,
        p.owner,
        call.title or call.name,
        as_utc(call.opens_at),
        as_utc(call.closes_at),
        call_state(call, now),
        sorted({t for t, _ in cap}),
        sorted({q for _, q in cap}),
        list(cfg["eligible_types"]),
        list(cfg["award_kinds"]),
        list(cfg["taxonomy"]),
        cfg["max_gpu_hours"],
        cap,
    )


def _applicant_type(s: Session, caller: Caller) -> str:
    user = s.get(UserRow, caller.user_id)
    org = s.get(OrganisationRow, user.organisation_id) if user and user.organisation_id else None
    return org.kind if org else ""


@router.get(
    "/programmes", response_class=HTMLResponse, dependencies=[requires_web(Permission.PROGRAMMES)]
)
def programmes_page(ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    now = ctx.now()
    with tx(ctx) as s:
        calls = [call_view(s, c, now) for c in prog.list_calls(s)]
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
    now = ctx.now()
    with tx(ctx) as s:
        call = call_view(s, prog.call_row(s, call_id), now)
        mine = [
            (a, apps.display_state(s, a))
            for a in apps.my_applications(s, caller)
            if a.call_id == call_id
        ]
        kind = _applicant_type(s, caller)
    return render.page(
        request,
        ctx,
        "programmes/call.html",
        caller,
        call=call,
        mine=mine,
        applicant_type=kind,
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
) -> HTMLResponse:
    with tx(ctx) as s:
        call = call_view(s, prog.call_row(s, call_id), ctx.now())
        kind = _applicant_type(s, caller)
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
    )


@router.get(
    "/programmes/calls/{call_id}/apply",
    response_class=HTMLResponse,
    dependencies=[requires_web(Permission.PROGRAMMES)],
)
def apply_form(call_id: int, ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    form = render.FormState.of({"kind": "gpu_hours"})
    return _form_page(ctx, request, caller, call_id, form)


def check_form(request: Request, call: CallView, form: render.FormState) -> None:
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
    with tx(ctx) as s:
        call = call_view(s, prog.call_row(s, call_id), ctx.now())
    check_form(request, call, form)
    submit = fields.get("action") == "submit"
    app_id = 0
    if form.ok:
        try:
            with tx(ctx) as s:
                row = apps.create_application(s, caller, call_id, application_of(form), ctx.now())
                if submit:
                    apps.submit_application(s, caller, row.id, ctx.now())
                app_id = row.id
        except ValidationError as exc:
            form.error(_FIELD_OF.get(exc.field, "call"), render.t(request, exc.message))
        except NotFound as exc:
            if exc.kind != "user":
                raise
            form.error("team", render.t(request, "A team member's username is not known."))
        except Conflict as exc:
            form.error("call", render.t(request, str(exc)))
    if not form.ok:
        return _form_page(ctx, request, caller, call_id, form, 422)
    flash = N_("Your application was submitted.") if submit else N_("Your draft was saved.")
    return done(f"/applications/{app_id}", flash)


@router.get(
    "/applications", response_class=HTMLResponse, dependencies=[requires_web(Permission.PROGRAMMES)]
)
def my_applications(ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    with tx(ctx) as s:
        rows = [
            (a, apps.display_state(s, a), prog.call_row(s, a.call_id))
            for a in apps.my_applications(s, caller)
        ]
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
    with tx(ctx) as s:
        row = apps.visible_application(s, caller, app_id)
        state = apps.display_state(s, row)
        call = call_view(s, prog.call_row(s, row.call_id), ctx.now())
        items = apps.batch_items(s, row)
        award = awards.award_of_application(s, caller, app_id)
        org = s.get(OrganisationRow, row.organisation_id)
    return render.page(
        request,
        ctx,
        "programmes/application.html",
        caller,
        status,
        app=row,
        state=state,
        call=call,
        items=items,
        award=award,
        organisation=org,
        is_applicant=row.applicant_id == caller.user_id,
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
        with tx(ctx) as s:
            apps.submit_application(s, caller, app_id, ctx.now())
    except ValidationError as exc:
        return _detail(ctx, request, caller, app_id, render.t(request, exc.message), 422)
    except Conflict as exc:
        return _detail(ctx, request, caller, app_id, render.t(request, str(exc)), 409)
    return done(f"/applications/{app_id}", N_("Your application was submitted."))


@router.post("/applications/{app_id}/withdraw", dependencies=[requires_web(Permission.PROGRAMMES)])
def withdraw_application(
    app_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    try:
        with tx(ctx) as s:
            apps.withdraw_application(s, caller, app_id, ctx.now())
    except Conflict as exc:
        return _detail(ctx, request, caller, app_id, render.t(request, str(exc)), 409)
    return done(f"/applications/{app_id}", N_("Your application was withdrawn."))
