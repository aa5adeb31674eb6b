"""What the programme pages of the portal show: the applicant's calls and applications, the
manager's console, and the reviewer's queue, each read in one transaction as views.

Why here: a page is a read model over several use cases (a call with its capacity, the
caller's applications with the state an applicant reads, a manager's lines with review
counts and normalised scores). The queries and the rules on them (a draft is its
applicant's business; a reviewer sees nothing of an application they are conflicted with,
nor others' scores before their own) live in the services, next to the use cases they
read, so that the page and the REST call for the same object cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from gpucenter.allocation import BatchItem, Criterion
from gpucenter.allocation.model import CallState
from gpucenter.auth.permissions import Caller, Role
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import NotFound
from gpucenter.persistence.tables import OrganisationRow, UserRow
from gpucenter.persistence.tables_allocation import ApplicationRow, CallRow, ReviewRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity.views import OrganisationView
from gpucenter.services.programmes import applications as apps
from gpucenter.services.programmes import awards
from gpucenter.services.programmes import calls as prog
from gpucenter.services.programmes.views import (
    ApplicationView,
    AwardRunView,
    AwardView,
    CallOverview,
    CallView,
    ProgrammeView,
    ReviewView,
)

# -- calls as applicants read them ---------------------------------------------------------


def call_state(call: CallRow, now: datetime) -> str:
    """'decided', or where `now` falls in the call's window: upcoming, open or closed."""
    if call.state == CallState.DECIDED:
        return CallState.DECIDED.value
    if now < as_utc(call.opens_at):
        return "upcoming"
    return "open" if now < as_utc(call.closes_at) else "closed"


def _overview(s: Session, call: CallRow, now: datetime) -> CallOverview:
    p = prog.programme(s, call.programme_id)
    cap = prog.capacity_of(s, call.id)
    cfg = call.config
    return CallOverview(
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


def overview_of(s: Session, call: CallRow, now: datetime) -> CallOverview:
    """A call as applicants read it, inside a transaction another read model opened."""
    return _overview(s, call, now)


def _applicant_type(s: Session, caller: Caller) -> str:
    user = s.get(UserRow, caller.user_id)
    org = s.get(OrganisationRow, user.organisation_id) if user and user.organisation_id else None
    return org.kind if org else ""


def call_overviews(ctx: AppContext) -> list[CallOverview]:
    """Every call, as the programmes page lists them (calls are public to the signed-in)."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        return [_overview(s, c, now) for c in prog.list_calls(s)]


def call_overview(ctx: AppContext, call_id: int) -> CallOverview:
    with ctx.sessions.begin() as s:
        return _overview(s, prog.call_row(s, call_id), ctx.now())


@dataclass(frozen=True, slots=True)
class ApplicantCall:
    """A call's page for one applicant: the call, their applications to it (with the state
    they read) and their organisation's applicant type."""

    call: CallOverview
    mine: list[tuple[ApplicationView, str]]
    applicant_type: str


def applicant_call(ctx: AppContext, caller: Caller, call_id: int) -> ApplicantCall:
    now = ctx.now()
    with ctx.sessions.begin() as s:
        call = _overview(s, prog.call_row(s, call_id), now)
        mine = [
            (ApplicationView.of(a), apps.display_state(s, a))
            for a in apps.my_applications(s, caller)
            if a.call_id == call_id
        ]
        return ApplicantCall(call, mine, _applicant_type(s, caller))


def apply_form(ctx: AppContext, caller: Caller, call_id: int) -> tuple[CallOverview, str]:
    """The call an application form is for, and the caller's applicant type."""
    with ctx.sessions.begin() as s:
        call = _overview(s, prog.call_row(s, call_id), ctx.now())
        return call, _applicant_type(s, caller)


def my_applications(ctx: AppContext, caller: Caller) -> list[tuple[ApplicationView, str, CallView]]:
    """The caller's applications, newest first, with the state they read and their call."""
    with ctx.sessions.begin() as s:
        return [
            (
                ApplicationView.of(a),
                apps.display_state(s, a),
                CallView.of(prog.call_row(s, a.call_id)),
            )
            for a in apps.my_applications(s, caller)
        ]


@dataclass(frozen=True, slots=True)
class ApplicationPage:
    app: ApplicationView
    state: str
    call: CallOverview
    items: tuple[BatchItem, ...]
    award: AwardView | None
    organisation: OrganisationView | None


def application_page(ctx: AppContext, caller: Caller, app_id: int) -> ApplicationPage:
    """One application for whoever may see it (NotFound for anyone else)."""
    with ctx.sessions.begin() as s:
        row = apps.visible_application(s, caller, app_id)
        state = apps.display_state(s, row)
        call = _overview(s, prog.call_row(s, row.call_id), ctx.now())
        items = apps.batch_items(s, row)
        award = awards.award_of_application(s, caller, app_id)
        org = s.get(OrganisationRow, row.organisation_id)
        return ApplicationPage(
            ApplicationView.of(row),
            state,
            call,
            items,
            AwardView.of(award) if award is not None else None,
            OrganisationView.of(org) if org is not None else None,
        )


# -- the manager's console -----------------------------------------------------------------


def managed_calls(
    ctx: AppContext, caller: Caller
) -> list[tuple[ProgrammeView, list[CallOverview]]]:
    """The programmes the caller manages, each with its calls."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        return [
            (ProgrammeView.of(p), [_overview(s, c, now) for c in prog.list_calls(s, p.id)])
            for p in prog.list_programmes(s)
            if caller.has_role(Role.PROGRAMME_MANAGER, p.id)
        ]


@dataclass(frozen=True, slots=True)
class AppLine:
    """One application as the manager's tables show it."""

    row: ApplicationView
    state: str
    organisation: str
    applicant_type: str
    requested: float
    reviews_assigned: int
    reviews_done: int
    mean_total: float | None
    score: float | None


def requested_hours(s: Session, row: ApplicationRow) -> float:
    """GPU-hours asked for: the batch requests, or a lease's GPUs times its hours."""
    if row.lease:
        lease = apps._lease_item(row.lease)
        return 0.0 if lease is None else lease.gpus * lease.hours
    return sum(i.gpu_hours for i in apps.batch_items(s, row))


def _lines(s: Session, caller: Caller, call_id: int) -> list[AppLine]:
    scores = apps.normalised_scores(s, call_id)
    out = []
    for a in apps.list_applications(s, caller, call_id):
        if a.state == apps.DRAFT:
            continue  # a draft is the applicant's own business until submitted
        org = s.get(OrganisationRow, a.organisation_id)
        reviews = apps.reviews_of(s, caller, a.id)
        totals = [r.total for r in reviews if r.total is not None and r.submitted_at]
        out.append(
            AppLine(
                ApplicationView.of(a),
                apps.display_state(s, a),
                org.name if org else "",
                org.kind if org else "",
                requested_hours(s, a),
                len(reviews),
                len(totals),
                sum(totals) / len(totals) if totals else None,
                scores.get(a.id),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class ManagedCall:
    """A call's page in the manager's console."""

    call: CallOverview
    lines: list[AppLine]
    runs: list[AwardRunView]
    reviewers: list[str]
    per_application: int


def managed_call(ctx: AppContext, caller: Caller, call_id: int) -> ManagedCall:
    """The call's submitted applications with their reviews and scores, its optimiser runs
    and its reviewers; the call's programme managers only."""
    with ctx.sessions.begin() as s:
        call = prog.call_row(s, call_id)
        prog.require_manager(caller, call.programme_id)
        view = _overview(s, call, ctx.now())
        lines = _lines(s, caller, call_id)
        runs = [AwardRunView.of(r) for r in awards.runs_of_call(s, caller, call_id)]
        reviewers = [
            u.username
            for u in (s.get(UserRow, i) for i in prog.reviewer_ids(s, call.programme_id))
            if u is not None
        ]
        k = int(call.config["reviewers_per_application"])
        return ManagedCall(view, lines, runs, reviewers, k)


@dataclass(frozen=True, slots=True)
class RunPage:
    """An optimiser run with its call and, per scored application, (application, applicant
    type, GPU-hours requested)."""

    run: AwardRunView
    call: CallOverview
    lines: dict[int, tuple[ApplicationView, str, float]]


def run_page(ctx: AppContext, caller: Caller, run_id: int) -> RunPage:
    """A run and what its explanation needs; the call's programme managers only."""
    with ctx.sessions.begin() as s:
        row = awards.get_run(s, caller, run_id)
        view = _overview(s, prog.call_row(s, row.call_id), ctx.now())
        lines = {}
        for key in row.result.get("scores", {}):
            app = s.get(ApplicationRow, int(key))
            if app is not None:
                org = s.get(OrganisationRow, app.organisation_id)
                lines[int(key)] = (
                    ApplicationView.of(app),
                    org.kind if org else "",
                    requested_hours(s, app),
                )
        return RunPage(AwardRunView.of(row), view, lines)


# -- the reviewer's queue ------------------------------------------------------------------


def _queue(s: Session, caller: Caller) -> list[tuple[ReviewRow, ApplicationRow]]:
    """Assigned reviews, leaving out any application the caller is conflicted with."""
    out = []
    for review in apps.my_reviews(s, caller):
        app = s.get(ApplicationRow, review.application_id)
        if app is not None and not apps.is_conflicted(s, caller.user_id, app):
            out.append((review, app))
    return out


def _mine(s: Session, caller: Caller, app_id: int) -> tuple[ReviewRow, ApplicationRow]:
    """The caller's assignment to `app_id`; NotFound if it is not in their queue."""
    for review, app in _queue(s, caller):
        if app.id == app_id:
            return review, app
    raise NotFound("review assignment", app_id)


def review_queue(
    ctx: AppContext, caller: Caller
) -> list[tuple[ReviewView, ApplicationView, CallView]]:
    with ctx.sessions.begin() as s:
        return [
            (ReviewView.of(r), ApplicationView.of(a), CallView.of(prog.call_row(s, a.call_id)))
            for r, a in _queue(s, caller)
        ]


@dataclass(frozen=True, slots=True)
class ReviewPage:
    app: ApplicationView
    call: CallView
    mine: ReviewView
    rubric: tuple[Criterion, ...]
    items: tuple[BatchItem, ...]
    others: list[ReviewView]


def review_page(ctx: AppContext, caller: Caller, app_id: int) -> ReviewPage:
    """The caller's assignment with what they score it on. Others' scores only once this
    reviewer has submitted: never before, whoever asks."""
    with ctx.sessions.begin() as s:
        mine, app = _mine(s, caller, app_id)
        call = prog.call_row(s, app.call_id)
        others = []
        if mine.submitted_at is not None:
            others = [
                ReviewView.of(r)
                for r in apps.reviews_of(s, caller, app_id)
                if r.reviewer_id != caller.user_id and r.submitted_at is not None
            ]
        return ReviewPage(
            ApplicationView.of(app),
            CallView.of(call),
            ReviewView.of(mine),
            prog.rubric_of(call.config),
            apps.batch_items(s, app),
            others,
        )


def review_rubric(ctx: AppContext, caller: Caller, app_id: int) -> tuple[Criterion, ...]:
    """The rubric of an application in the caller's queue (NotFound if it is not there)."""
    with ctx.sessions.begin() as s:
        _, app = _mine(s, caller, app_id)
        return prog.rubric_of(prog.call_row(s, app.call_id).config)


def declare_queued_conflict(ctx: AppContext, caller: Caller, app_id: int, reason: str) -> None:
    """A reviewer declares a conflict with an application in their queue (NotFound if it is
    not there); it leaves the queue."""
    with ctx.sessions.begin() as s:
        _mine(s, caller, app_id)
        apps.declare_conflict(s, caller, app_id, reason, ctx.now())


__all__ = [
    "AppLine",
    "ApplicantCall",
    "ApplicationPage",
    "ManagedCall",
    "ReviewPage",
    "RunPage",
    "applicant_call",
    "application_page",
    "apply_form",
    "call_overview",
    "call_overviews",
    "declare_queued_conflict",
    "managed_call",
    "managed_calls",
    "my_applications",
    "requested_hours",
    "review_page",
    "review_queue",
    "review_rubric",
    "run_page",
]
