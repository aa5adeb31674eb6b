"""The reviewer's pages: the queue of assigned applications and the scoring form.

Two rules of fair review hold on these pages as in the services: a reviewer never sees
other reviewers' scores before submitting their own (so no one anchors on a colleague),
and never sees an application they have a conflict of interest with (it leaves the queue
the moment the conflict is declared). Reviewers stay anonymous to each other.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from gpucenter.allocation import Criterion
from gpucenter.auth.permissions import Caller, Permission
from gpucenter.domain.errors import Conflict, PermissionDenied, ValidationError
from gpucenter.http.deps import Ctx, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.services.context import AppContext
from gpucenter.services.programmes import actions, portal
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
)

router = APIRouter(include_in_schema=False)


@router.get(
    "/reviews", response_class=HTMLResponse, dependencies=[requires_web(Permission.PROGRAMMES)]
)
def review_queue(ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    rows = portal.review_queue(ctx, caller)
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
    # Others' scores only once this reviewer has submitted: the service sees to that.
    page = portal.review_page(ctx, caller, app_id)
    mine = page.mine
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
        app=page.app,
        call=page.call,
        mine=mine,
        rubric=page.rubric,
        items=page.items,
        others=page.others,
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
    rubric = portal.review_rubric(ctx, caller, app_id)
    names = [f"score_{c.name}" for c in rubric] + ["comment"]
    form = render.FormState.of({k: fields.get(k, "") for k in names})
    scores = check_scores(request, rubric, form)
    if form.ok:
        try:
            actions.submit_review(ctx, caller, app_id, scores, form.value("comment"))
        except ValidationError as exc:
            field = exc.field.replace("scores.", "score_")
            form.error(field if field in names else "comment", render.error_text(request, exc))
    if not form.ok:
        return _review_page(ctx, request, caller, app_id, form, 422)
    return done(f"/reviews/{app_id}", N_("Your review was submitted."))


@router.post("/reviews/{app_id}/conflict", dependencies=[requires_web(Permission.PROGRAMMES)])
def declare_conflict(
    app_id: int, ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    try:
        reason = fields.get("reason", "")[:2000]
        portal.declare_queued_conflict(ctx, caller, app_id, reason)
    except (Conflict, PermissionDenied) as exc:
        return _review_page(
            ctx, request, caller, app_id, None, 409, render.error_text(request, exc)
        )
    return done("/reviews", N_("Conflict of interest declared; the application left your queue."))
