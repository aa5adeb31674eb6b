"""Applications and their review: drafts, submission, withdrawal, conflicts, scores.

Who sees what: an application is visible to its applicant and team, to the programme's
managers, and to reviewers assigned to it who are not conflicted. Everyone else gets
NotFound, so the existence of another applicant's application never leaks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import String, cast, select
from sqlalchemy.orm import Session

from gpucenter.allocation import (
    AwardKind,
    BatchItem,
    LeaseItem,
    Reviewer,
    ReviewTarget,
    Submission,
    assign_reviewers,
    check_submission,
    conflicted,
    normalise,
    terms,
    weighted_total,
)
from gpucenter.allocation.lifecycle import AccessTier, ReportState, ReserveState
from gpucenter.allocation.model import ApplicationState
from gpucenter.auth.permissions import Caller, Role
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import Conflict, NotFound, PermissionDenied, ValidationError
from gpucenter.domain.messages import msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import OrganisationRow, UserRow
from gpucenter.persistence.tables_allocation import (
    ApplicationRequestRow,
    ApplicationRow,
    AwardRow,
    CallRow,
    ConflictRow,
    ReviewRow,
)
from gpucenter.persistence.tables_awards import AwardReportRow, ReserveRow
from gpucenter.services.programmes import calls as prog

DRAFT, SUBMITTED, WITHDRAWN, AWARDED, REJECTED, RESERVE = (
    ApplicationState.DRAFT,
    ApplicationState.SUBMITTED,
    ApplicationState.WITHDRAWN,
    ApplicationState.AWARDED,
    ApplicationState.REJECTED,
    ApplicationState.RESERVE,
)


@dataclass(frozen=True)
class ApplicationForm:
    title: str
    region: str
    kind: str = AwardKind.GPU_HOURS.value
    plan: str = ""
    team: Sequence[str] = ()
    requests: Sequence[Mapping[str, Any]] = ()  # {gpu_type, period, gpu_hours}
    min_gpu_hours: float = 0.0
    lease: Mapping[str, Any] | None = None  # {gpu_type, gpus, min_gpus, starts_at, ends_at, site}
    tags: Sequence[str] = field(default_factory=tuple)
    parent_award_id: int | None = None


def _lease_item(raw: Mapping[str, Any] | None) -> LeaseItem | None:
    if raw is None:
        return None
    try:
        return LeaseItem(
            str(raw["gpu_type"]),
            int(raw["gpus"]),
            int(raw.get("min_gpus", raw["gpus"])),
            as_utc(datetime.fromisoformat(str(raw["starts_at"]))),
            as_utc(datetime.fromisoformat(str(raw["ends_at"]))),
            str(raw.get("site", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationError.about("lease", msg("error.lease_fields", problem=str(exc))) from None


def _requests(app: ApplicationRow, s: Session) -> list[ApplicationRequestRow]:
    stmt = select(ApplicationRequestRow).where(ApplicationRequestRow.application_id == app.id)
    return list(s.scalars(stmt.order_by(ApplicationRequestRow.id)))


def batch_items(s: Session, app: ApplicationRow) -> tuple[BatchItem, ...]:
    return tuple(BatchItem(r.gpu_type, r.period, r.gpu_hours) for r in _requests(app, s))


def create_application(
    s: Session, caller: Caller, call_id: int, form: ApplicationForm, now: datetime
) -> ApplicationRow:
    """Save a draft for the caller's organisation; nothing is checked against the call yet."""
    call = prog.call_row(s, call_id)
    user = s.get(UserRow, caller.user_id)
    if user is None or user.organisation_id is None:
        raise ValidationError.about("organisation", msg("error.no_organisation"))
    row = ApplicationRow(
        call_id=call.id,
        applicant_id=user.id,
        organisation_id=user.organisation_id,
        state=DRAFT,
        parent_award_id=form.parent_award_id,
        created_at=now,
    )
    _fill(s, row, form)
    return row


def update_application(
    s: Session, caller: Caller, app_id: int, form: ApplicationForm, now: datetime
) -> ApplicationRow:
    """Change a draft (its applicant only): everything the form holds is replaced. Once
    submitted an application is what reviewers score, so it no longer changes."""
    row = _own(s, caller, app_id)
    if row.state != DRAFT:
        raise Conflict.of(msg("error.application_not_draft_edit", app=app_id, state=row.state))
    for old in _requests(row, s):
        s.delete(old)
    s.flush()
    _fill(s, row, form)
    return row


def _fill(s: Session, row: ApplicationRow, form: ApplicationForm) -> None:
    """Write the form into a draft (new or edited) and its GPU-hour requests."""
    try:
        kind = AwardKind(form.kind)
    except ValueError:
        raise ValidationError.about("kind", msg("error.application_kind")) from None
    if not form.title.strip():
        raise ValidationError.about("title", msg("error.value_empty"))
    for username in form.team:
        repo.user_by_name(s, username)
    lease = _lease_item(form.lease) if kind is AwardKind.LEASE else None
    row.title = form.title.strip()
    row.plan = form.plan
    row.team = list(form.team)
    row.region = form.region.strip().lower()
    row.kind = kind.value
    row.min_gpu_hours = float(form.min_gpu_hours)
    row.lease = dict(form.lease) if lease is not None and form.lease is not None else None
    row.tags = list(form.tags)
    s.add(row)
    s.flush()
    if kind is AwardKind.GPU_HOURS:
        for r in form.requests:
            try:
                item = BatchItem(str(r["gpu_type"]), str(r["period"]), float(r["gpu_hours"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValidationError.about(
                    "requests", msg("error.request_fields", problem=str(exc))
                ) from None
            s.add(
                ApplicationRequestRow(
                    application_id=row.id,
                    gpu_type=item.gpu_type,
                    period=item.period,
                    gpu_hours=item.gpu_hours,
                )
            )
        s.flush()


def _own(s: Session, caller: Caller, app_id: int) -> ApplicationRow:
    row = s.get(ApplicationRow, app_id)
    if row is None or row.applicant_id != caller.user_id:
        raise NotFound("application", app_id)
    return row


def submit_application(s: Session, caller: Caller, app_id: int, now: datetime) -> ApplicationRow:
    """Check eligibility, the call's dates and limits, and duplicates; then submit."""
    row = _own(s, caller, app_id)
    if row.state != DRAFT:
        raise Conflict.of(msg("error.application_not_draft_submit", app=app_id, state=row.state))
    call = prog.call_row(s, row.call_id)
    org = s.get(OrganisationRow, row.organisation_id)
    assert org is not None
    sub = Submission(
        org.kind,
        AwardKind(row.kind),
        batch_items(s, row),
        _lease_item(row.lease),
        row.min_gpu_hours,
        tuple(row.tags),
        row.region,
    )
    check_submission(prog.rules_of(s, call), sub, now)
    dup = s.scalar(
        select(ApplicationRow.id).where(
            ApplicationRow.call_id == row.call_id,
            ApplicationRow.id != row.id,
            ApplicationRow.state == SUBMITTED,
            (ApplicationRow.applicant_id == row.applicant_id)
            | (
                (ApplicationRow.organisation_id == row.organisation_id)
                & (ApplicationRow.title == row.title)
            ),
        )
    )
    if dup is not None:
        raise Conflict.of(msg("error.application_duplicate", app=dup))
    if terms.tier_rules(call.config).tier is AccessTier.FAST:
        fast_tier_checks(s, row)
    row.state = SUBMITTED
    row.submitted_at = now
    s.flush()
    return row


def fast_tier_checks(s: Session, row: ApplicationRow) -> None:
    """A fast tier's automatic eligibility, beyond the call's own rules: one application at
    a time per applicant and call, and no report overdue on any of the applicant's awards
    (a fast award is small and quick, so it goes to applicants in good standing)."""
    other = s.scalar(
        select(ApplicationRow.id).where(
            ApplicationRow.call_id == row.call_id,
            ApplicationRow.applicant_id == row.applicant_id,
            ApplicationRow.id != row.id,
            ApplicationRow.state.in_([SUBMITTED, AWARDED]),
        )
    )
    if other is not None:
        raise Conflict.of(msg("error.fast_tier_once", app=other))
    overdue = s.scalar(
        select(AwardReportRow.id)
        .join(AwardRow, AwardRow.id == AwardReportRow.award_id)
        .join(ApplicationRow, ApplicationRow.id == AwardRow.application_id)
        .where(
            ApplicationRow.applicant_id == row.applicant_id,
            AwardReportRow.state == ReportState.OVERDUE,
        )
    )
    if overdue is not None:
        raise ValidationError.about("call", msg("error.report_overdue_apply"))


def withdraw_application(s: Session, caller: Caller, app_id: int, now: datetime) -> ApplicationRow:
    row = _own(s, caller, app_id)
    if row.state not in (DRAFT, SUBMITTED, RESERVE):
        raise Conflict.of(msg("error.application_not_withdrawable", app=app_id, state=row.state))
    if row.state == RESERVE:  # it leaves the reserve list: the next in line moves up
        entry = s.scalar(select(ReserveRow).where(ReserveRow.application_id == row.id))
        if entry is not None:
            entry.state = ReserveState.CLOSED
    row.state = WITHDRAWN
    s.flush()
    return row


def _team_ids(s: Session, row: ApplicationRow) -> frozenset[int]:
    ids = {row.applicant_id}
    if row.team:
        ids |= set(s.scalars(select(UserRow.id).where(UserRow.username.in_(row.team))))
    return frozenset(ids)


def _declared(s: Session, app_ids: Sequence[int]) -> frozenset[tuple[int, int]]:
    rows = s.execute(
        select(ConflictRow.reviewer_id, ConflictRow.application_id).where(
            ConflictRow.application_id.in_(app_ids)
        )
    )
    return frozenset((r, a) for r, a in rows)


def _reviewer(s: Session, user_id: int) -> Reviewer:
    user = s.get(UserRow, user_id)
    return Reviewer(user_id, user.organisation_id if user else None)


def _target(s: Session, row: ApplicationRow) -> ReviewTarget:
    return ReviewTarget(row.id, row.organisation_id, _team_ids(s, row))


def is_conflicted(s: Session, reviewer_id: int, row: ApplicationRow) -> bool:
    return conflicted(_reviewer(s, reviewer_id), _target(s, row), _declared(s, [row.id]))


def _call_of(s: Session, row: ApplicationRow) -> CallRow:
    return prog.call_row(s, row.call_id)


def visible_application(s: Session, caller: Caller, app_id: int) -> ApplicationRow:
    row = s.get(ApplicationRow, app_id)
    if row is None:
        raise NotFound("application", app_id)
    if caller.user_id in _team_ids(s, row):
        return row
    if caller.has_role(Role.PROGRAMME_MANAGER, _call_of(s, row).programme_id):
        return row
    review = _review(s, caller.user_id, app_id)
    if review is not None and not is_conflicted(s, caller.user_id, row):
        return row
    raise NotFound("application", app_id)


def list_applications(s: Session, caller: Caller, call_id: int) -> list[ApplicationRow]:
    """Managers see every application in the call; others only their own teams'."""
    call = prog.call_row(s, call_id)
    stmt = select(ApplicationRow).where(ApplicationRow.call_id == call_id)
    rows = list(s.scalars(stmt.order_by(ApplicationRow.id)))
    if caller.has_role(Role.PROGRAMME_MANAGER, call.programme_id):
        return rows
    return [r for r in rows if caller.user_id in _team_ids(s, r)]


def declare_conflict(
    s: Session, caller: Caller, app_id: int, reason: str, now: datetime
) -> ConflictRow:
    """A reviewer declares a conflict; an unsubmitted assignment to it is withdrawn."""
    row = s.get(ApplicationRow, app_id)
    if row is None or not caller.has_role(Role.REVIEWER, _call_of(s, row).programme_id):
        raise NotFound("application", app_id)
    existing = s.scalar(
        select(ConflictRow).where(
            ConflictRow.application_id == app_id, ConflictRow.reviewer_id == caller.user_id
        )
    )
    if existing is not None:
        return existing
    conflict = ConflictRow(
        application_id=app_id, reviewer_id=caller.user_id, reason=reason, created_at=now
    )
    s.add(conflict)
    review = _review(s, caller.user_id, app_id)
    if review is not None:
        if review.submitted_at is not None:
            raise Conflict.of(msg("error.already_scored"))
        s.delete(review)
    s.flush()
    return conflict


def assign_reviews(s: Session, caller: Caller, call_id: int, now: datetime) -> dict[int, list[int]]:
    """Give every submitted application k conflict-free reviewers, balancing load."""
    call = prog.call_row(s, call_id)
    prog.require_manager(caller, call.programme_id)
    apps = list(
        s.scalars(
            select(ApplicationRow).where(
                ApplicationRow.call_id == call_id, ApplicationRow.state == SUBMITTED
            )
        )
    )
    reviewers = [_reviewer(s, r) for r in prog.reviewer_ids(s, call.programme_id)]
    existing: dict[int, list[int]] = {}
    for r in s.scalars(select(ReviewRow).where(ReviewRow.application_id.in_([a.id for a in apps]))):
        existing.setdefault(r.application_id, []).append(r.reviewer_id)
    k = int(call.config["reviewers_per_application"])
    result = assign_reviewers(
        [_target(s, a) for a in apps], reviewers, k, _declared(s, [a.id for a in apps]), existing
    )
    for app_id, ids in result.items():
        for rid in ids:
            if rid not in existing.get(app_id, []):
                s.add(ReviewRow(application_id=app_id, reviewer_id=rid, scores={}, assigned_at=now))
    s.flush()
    return result


def _review(s: Session, reviewer_id: int, app_id: int) -> ReviewRow | None:
    return s.scalar(
        select(ReviewRow).where(
            ReviewRow.application_id == app_id, ReviewRow.reviewer_id == reviewer_id
        )
    )


def my_reviews(s: Session, caller: Caller) -> list[ReviewRow]:
    stmt = select(ReviewRow).where(ReviewRow.reviewer_id == caller.user_id)
    return list(s.scalars(stmt.order_by(ReviewRow.application_id)))


def submit_review(
    s: Session,
    caller: Caller,
    app_id: int,
    scores: Mapping[str, float],
    comment: str,
    now: datetime,
) -> ReviewRow:
    review = _review(s, caller.user_id, app_id)
    row = s.get(ApplicationRow, app_id)
    if review is None or row is None:
        raise NotFound("review assignment", app_id)
    if is_conflicted(s, caller.user_id, row):
        raise PermissionDenied.of(msg("error.reviewer_conflict_self"))
    rubric = prog.rubric_of(_call_of(s, row).config)
    review.total = weighted_total(rubric, scores)
    review.scores = dict(scores)
    review.comment = comment
    review.submitted_at = now
    s.flush()
    return review


def reviews_of(s: Session, caller: Caller, app_id: int) -> list[ReviewRow]:
    """Managers see all reviews; a reviewer sees the others' only after submitting their own."""
    row = s.get(ApplicationRow, app_id)
    if row is None:
        raise NotFound("application", app_id)
    rows = list(s.scalars(select(ReviewRow).where(ReviewRow.application_id == app_id)))
    if caller.has_role(Role.PROGRAMME_MANAGER, _call_of(s, row).programme_id):
        return rows
    mine = _review(s, caller.user_id, app_id)
    if mine is None or is_conflicted(s, caller.user_id, row):
        raise NotFound("application", app_id)
    if mine.submitted_at is None:
        return [mine]
    return [r for r in rows if r.submitted_at is not None]


def normalised_scores(s: Session, call_id: int) -> dict[int, float]:
    """Per-reviewer normalised scores of the call's submitted, reviewed applications."""
    rows = s.execute(
        select(ReviewRow.reviewer_id, ReviewRow.application_id, ReviewRow.total)
        .join(ApplicationRow, ApplicationRow.id == ReviewRow.application_id)
        .where(ApplicationRow.call_id == call_id, ReviewRow.total.is_not(None))
    )
    return normalise({(r, a): float(t) for r, a, t in rows})


def my_applications(s: Session, caller: Caller) -> list[ApplicationRow]:
    """Applications the caller made or is on the team of, newest first (the portal's list)."""
    pattern = '%"' + caller.username.replace("%", "").replace("_", "\\_") + '"%'
    stmt = select(ApplicationRow).where(
        (ApplicationRow.applicant_id == caller.user_id)
        | cast(ApplicationRow.team, String).like(pattern, escape="\\")
    )
    rows = list(s.scalars(stmt.order_by(ApplicationRow.id.desc())))
    # The text match is only a filter; membership is decided exactly, as everywhere else.
    return [r for r in rows if caller.user_id in _team_ids(s, r)]


def display_state(s: Session, row: ApplicationRow) -> str:
    """The state an applicant reads: a submitted application with reviewers assigned is
    'under_review' (stored state stays 'submitted'; nothing else depends on this)."""
    if row.state == SUBMITTED:
        assigned = s.scalar(select(ReviewRow.id).where(ReviewRow.application_id == row.id).limit(1))
        if assigned is not None:
            return "under_review"
    return row.state


__all__ = [
    "ApplicationForm",
    "assign_reviews",
    "batch_items",
    "create_application",
    "declare_conflict",
    "display_state",
    "is_conflicted",
    "list_applications",
    "my_applications",
    "my_reviews",
    "normalised_scores",
    "reviews_of",
    "submit_application",
    "submit_review",
    "visible_application",
    "withdraw_application",
]
