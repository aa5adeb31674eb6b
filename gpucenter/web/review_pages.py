"""The reviewer's pages: the queue of assigned applications and the scoring form.

Two rules of fair review hold on these pages as in the services: a reviewer never sees
other reviewers' scores before submitting their own (so no one anchors on a colleague),
and never sees an application they have a conflict of interest with (it leaves the queue
the moment the conflict is declared). Reviewers stay anonymous to each other.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from gpucenter.allocation import Criterion
from gpucenter.auth.permissions import Caller, Permission
from gpucenter.domain.errors import Conflict, NotFound, PermissionDenied, ValidationError
from gpucenter.http.deps import Ctx, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.persistence.tables_allocation import ApplicationRow, ReviewRow
from gpucenter.services.context import AppContext
from gpucenter.services.programmes import applications as apps
from gpucenter.services.programmes import calls as prog
from gpucenter.web import render
from gpucenter.web.i18n import N_
from gpucenter.web.programme_pages import (
    CRITERIA,
    REGIONS,
    STRATEGIC_FIELDS,
    FormFields,
    check_csrf,
    done,
    label,
    number,
    tx,
)

router = APIRouter(include_in_schema=False)


def _queue(s: Session, caller: Caller) -> list[tuple[ReviewRow, ApplicationRow]]:
    """Assigned reviews, leaving out any application the caller is conflicted with."""
    out = []
    for review in apps.my_reviews(s, caller):
        app = s.get(ApplicationRow, review.application_id)
        if app is not None and not apps.is_conflicted(s, caller.user_id, app):
            out.append((review, app))
    return out


def _mine(s: Session, caller: Caller, app_id: int) -> tuple[ReviewRow, ApplicationRow]:
    for review, app in _queue(s, caller):
        if app.id == app_id:
            return review, app
    raise NotFound("review assignment", app_id)


@router.get(
    "/reviews", response_class=HTMLResponse, dependencies=[requires_web(Permission.PROGRAMMES)]
)
def review_queue(ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    with tx(ctx) as s:
        rows = [(r, a, prog.call_row(s, a.call_id)) for r, a in _queue(s, caller)]
    return render.page(request, ctx, "programmes/reviews.html", caller, rows=rows)


def _review_page(
    ctx: AppContext,
    request: Request,
    caller: Caller,
    app_id: int,
    form: render.FormState | None = None,
    status: int = 200,
    error: str = "",
) -> HTMLResponse:
    with tx(ctx) as s:
        mine, app = _mine(s, caller, app_id)
        call = prog.call_row(s, app.call_id)
        rubric = prog.rubric_of(call.config)
        items = apps.batch_items(s, app)
        # Others' scores only once this reviewer has submitted: never before, whoever asks.
        others = []
        if mine.submitted_at is not None:
            others = [
                r
                for r in apps.reviews_of(s, caller, app_id)
                if r.reviewer_id != caller.user_id and r.submitted_at is not None
            ]
    if form is None:
        values: dict[str, object] = {f"score_{k}": v for k, v in (mine.scores or {}).items()}
        values["comment"] = mine.comment
        form = render.FormState.of(values)
    return render.page(
        request,
        ctx,
        "programmes/review.html",
        caller,
        status,
        app=app,
        call=call,
        mine=mine,
        rubric=rubric,
        items=items,
        others=others,
        form=form,
        error=error,
        criteria=CRITERIA,
        regions=REGIONS,
        fields=STRATEGIC_FIELDS,
        label=label,
    )


@router.get(
    "/reviews/{app_id}",
    response_class=HTMLResponse,
    dependencies=[requires_web(Permission.PROGRAMMES)],
)
def review_form(app_id: int, ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    return _review_page(ctx, request, caller, app_id)


def check_scores(
    request: Request, rubric: tuple[Criterion, ...], form: render.FormState
) -> dict[str, float]:
    scores: dict[str, float] = {}
    for c in rubric:
        value = number(form.value(f"score_{c.name}"))
        if value is None or not 0 <= value <= c.max_points:
            message = render.t(request, "Enter a score from 0 to %(top)s.") % {
                "top": f"{c.max_points:g}"
            }
            form.error(f"score_{c.name}", message)
        else:
            scores[c.name] = value
    if len(form.value("comment")) > 20_000:
        form.error("comment", render.t(request, "Keep the comment under 20,000 characters."))
    return scores


@router.post("/reviews/{app_id}", dependencies=[requires_web(Permission.PROGRAMMES)])
def review_submit(
    app_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    with tx(ctx) as s:
        _, app = _mine(s, caller, app_id)
        rubric = prog.rubric_of(prog.call_row(s, app.call_id).config)
    names = [f"score_{c.name}" for c in rubric] + ["comment"]
    form = render.FormState.of({k: fields.get(k, "") for k in names})
    scores = check_scores(request, rubric, form)
    if form.ok:
        try:
            with tx(ctx) as s:
                apps.submit_review(s, caller, app_id, scores, form.value("comment"), ctx.now())
        except ValidationError as exc:
            field = exc.field.replace("scores.", "score_")
            form.error(field if field in names else "comment", render.t(request, exc.message))
    if not form.ok:
        return _review_page(ctx, request, caller, app_id, form, 422)
    return done(f"/reviews/{app_id}", N_("Your review was submitted."))


@router.post("/reviews/{app_id}/conflict", dependencies=[requires_web(Permission.PROGRAMMES)])
def declare_conflict(
    app_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    try:
        with tx(ctx) as s:
            _mine(s, caller, app_id)
            apps.declare_conflict(s, caller, app_id, fields.get("reason", "")[:2000], ctx.now())
    except (Conflict, PermissionDenied) as exc:
        return _review_page(ctx, request, caller, app_id, None, 409, render.t(request, str(exc)))
    return done("/reviews", N_("Conflict of interest declared; the application left your queue."))
