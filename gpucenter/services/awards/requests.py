"""Renewals, supplements, extensions and transfers: requests on a standing award, each with
its own review path (`allocation.lifecycle.REVIEW_PATHS`) and its effect on the allocation.

- renewal: GPU-hours for a later quarter of the call; a reviewer recommends, the manager
  decides; approved, it adds an allocation for that quarter and moves the award's end (and
  its final report) to the quarter's end.
- supplement: more GPU-hours now (at most the programme's share of the award); the
  manager decides; approved, the allocation of that GPU type and quarter grows.
- extension: a later end without more GPU-hours (at most the programme's days); the
  manager decides; approved, the last allocations and the final report move.
- transfer: unused GPU-hours moved from one GPU type to another in the same quarter; the
  manager decides.

Every change that takes capacity is checked against the call's capacity, shares and caps
with the other awards as they stand (`reserve.check_change`), as a round is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.allocation import Award, Reviewer, ReviewTarget, conflicted, quarter_bounds
from gpucenter.allocation.lifecycle import (
    REQUEST_MOVES,
    AwardState,
    RequestKind,
    RequestState,
    ReviewStep,
    check,
    next_step,
)
from gpucenter.allocation.terms import change_rules
from gpucenter.auth.permissions import Caller, Role
from gpucenter.domain.allocations import AllocationState
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import Conflict, NotFound, ValidationError
from gpucenter.domain.messages import Num, msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import AllocationRow, UserRow
from gpucenter.persistence.tables_allocation import AwardRow
from gpucenter.persistence.tables_awards import AwardRequestRow
from gpucenter.services.awards import reports, reserve
from gpucenter.services.awards.common import (
    Who,
    application_of,
    award_row,
    call_of,
    is_pi,
    managers_of,
    notify,
    project_people,
    quarter_of,
    record,
    refuse,
    require_manager,
)
from gpucenter.services.programmes import awards as rounds
from gpucenter.services.programmes import calls as prog

OPEN = (RequestState.SUBMITTED.value, RequestState.RECOMMENDED.value)


def _number(body: Mapping[str, Any], key: str) -> float:
    try:
        value = float(body[key])
    except (KeyError, TypeError, ValueError):
        raise ValidationError.about(key, msg("error.value_number")) from None
    if not value > 0:
        raise ValidationError.about(key, msg("error.value_positive"))
    return value


def _clean(
    s: Session, award: AwardRow, kind: RequestKind, body: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """The request's body, checked for what it asks (not yet for what capacity allows)."""
    call = call_of(s, award)
    cells = prog.capacity_of(s, call.id)
    rules = change_rules(call.config)
    if kind is RequestKind.EXTENSION:
        days = int(_number(body, "days"))
        done = sum(
            int(r.body.get("days", 0))
            for r in _requests(s, award.id)
            if r.kind == kind and r.state == RequestState.APPROVED
        )
        if days + done > rules.max_extension_days:
            raise ValidationError.about(
                "days", msg("error.extension_too_long", days=rules.max_extension_days)
            )
        return {"days": days}
    hours = _number(body, "gpu_hours")
    period = str(body.get("period", ""))
    if kind is RequestKind.TRANSFER:
        src, dst = str(body.get("from_type", "")), str(body.get("to_type", ""))
        if src == dst or (dst, period) not in cells:
            raise ValidationError.about("to_type", msg("error.transfer_same_type"))
        alloc = _allocation(s, award, src, period)
        if alloc is None:
            raise ValidationError.about(
                "from_type", msg("error.transfer_source_missing", gpu_type=src, period=period)
            )
        return {"from_type": src, "to_type": dst, "period": period, "gpu_hours": hours}
    gpu_type = str(body.get("gpu_type", ""))
    if (gpu_type, period) not in cells:
        raise ValidationError.about(
            "period", msg("error.period_no_capacity", gpu_type=gpu_type, period=period)
        )
    if quarter_bounds(period)[1] <= now:
        raise ValidationError.about("period", msg("error.period_ended", period=period))
    if kind is RequestKind.SUPPLEMENT:
        asked = hours + sum(
            float(r.body.get("gpu_hours", 0))
            for r in _requests(s, award.id)
            if r.kind == kind and r.state == RequestState.APPROVED
        )
        if asked > rules.max_supplement_share * award.gpu_hours + 1e-6:
            raise ValidationError.about(
                "gpu_hours",
                msg(
                    "error.supplement_too_big",
                    share=Num(rules.max_supplement_share, 0, percent=True),
                ),
            )
    if (
        kind is RequestKind.RENEWAL
        and award.ends_at is not None
        and quarter_bounds(period)[0] < as_utc(award.ends_at) - timedelta(days=1)
    ):
        raise ValidationError.about("period", msg("error.renewal_period"))
    return {"gpu_type": gpu_type, "period": period, "gpu_hours": hours}


def _requests(s: Session, award_id: int) -> list[AwardRequestRow]:
    stmt = select(AwardRequestRow).where(AwardRequestRow.award_id == award_id)
    return list(s.scalars(stmt.order_by(AwardRequestRow.id)))


def request_row(s: Session, request_id: int) -> AwardRequestRow:
    row = s.get(AwardRequestRow, request_id)
    if row is None:
        raise NotFound("request", request_id)
    return row


def _set(s: Session, row: AwardRequestRow, new: RequestState, who: Who, now: datetime) -> None:
    old = RequestState(row.state)
    check(REQUEST_MOVES, msg("thing.request", id=row.id), old, new)
    row.state = new.value
    s.flush()
    record(
        s,
        who,
        f"request.{new.value}",
        now,
        "award",
        row.award_id,
        {"request": row.id, "kind": row.kind, "body": row.body, "from": old, "to": new},
    )


def submit(
    s: Session,
    caller: Caller,
    award_id: int,
    kind: str,
    body: Mapping[str, Any],
    justification: str,
    now: datetime,
) -> AwardRequestRow:
    """The PI asks for a change; it goes to the first step of its kind's review path."""
    award = award_row(s, award_id)
    if not is_pi(s, caller, award):
        refuse(s, caller, award, msg("error.change_pi_only"), ("award", award_id))
    try:
        what = RequestKind(kind)
    except ValueError:
        raise ValidationError.about("kind", msg("error.request_kind")) from None
    if award.state != AwardState.ACTIVE:
        raise Conflict.of(msg("error.award_not_active", award=award.id, state=award.state))
    if what in (RequestKind.RENEWAL, RequestKind.EXTENSION) and reports.owes_overdue(s, award):
        raise Conflict.of(msg("error.report_overdue"))
    if any(r.kind == what and r.state in OPEN for r in _requests(s, award.id)):
        raise Conflict.of(msg("error.request_waiting", kind=what.value))
    if not justification.strip():
        raise ValidationError.about("justification", msg("error.justification_missing"))
    row = AwardRequestRow(
        award_id=award.id,
        kind=what.value,
        state=RequestState.SUBMITTED.value,
        body=_clean(s, award, what, body, now),
        justification=justification.strip()[:20_000],
        submitted_by=caller.user_id,
        submitted_at=now,
    )
    s.add(row)
    s.flush()
    record(
        s,
        Who.of(caller),
        "request.submit",
        now,
        "award",
        award.id,
        {"request": row.id, "kind": what, "body": row.body},
    )
    notify(
        s,
        managers_of(s, call_of(s, award).programme_id),
        f"[gpucenter] A {what.value} is requested for award {award.id}",
        row.justification[:2000],
        now,
    )
    return row


def assign_reviewer(
    s: Session, caller: Caller, request_id: int, username: str, now: datetime
) -> AwardRequestRow:
    """The manager gives a renewal to one of the programme's reviewers, never a conflicted
    one (the applicant's organisation or team)."""
    row = request_row(s, request_id)
    award = award_row(s, row.award_id)
    require_manager(s, caller, award, ("request", request_id))
    if next_step(RequestKind(row.kind), RequestState(row.state)) is not ReviewStep.REVIEWER:
        raise Conflict.of(msg("error.request_not_for_reviewer"))
    user = repo.user_by_name(s, username)
    call = call_of(s, award)
    if user.id not in prog.reviewer_ids(s, call.programme_id):
        raise ValidationError.about("reviewer", msg("error.not_a_reviewer", user=username))
    app = application_of(s, award)
    team = {app.applicant_id, *s.scalars(select(UserRow.id).where(UserRow.username.in_(app.team)))}
    target = ReviewTarget(app.id, app.organisation_id, frozenset(team))
    if conflicted(Reviewer(user.id, user.organisation_id), target, frozenset()):
        raise ValidationError.about("reviewer", msg("error.reviewer_conflict", user=username))
    row.reviewer_id = user.id
    s.flush()
    record(
        s,
        Who.of(caller),
        "request.reviewer",
        now,
        "award",
        award.id,
        {"request": row.id, "reviewer": username},
    )
    notify(
        s,
        [user.id],
        f"[gpucenter] Review a renewal request of award {award.id}",
        "Recommend it or not from your review queue.",
        now,
    )
    return row


def recommend(
    s: Session, caller: Caller, request_id: int, approve: bool, comment: str, now: datetime
) -> AwardRequestRow:
    """The assigned reviewer's recommendation; the manager then decides."""
    row = request_row(s, request_id)
    programme_id = call_of(s, award_row(s, row.award_id)).programme_id
    if row.reviewer_id != caller.user_id or not caller.has_role(Role.REVIEWER, programme_id):
        raise NotFound("request", request_id)
    if not comment.strip():
        raise ValidationError.about("comment", msg("error.comment_missing"))
    verdict = "approve" if approve else "decline"
    row.recommendation = f"{verdict}: {comment.strip()[:5000]}"
    row.recommended_at = now
    _set(s, row, RequestState.RECOMMENDED, Who.of(caller), now)
    return row


def decide(
    s: Session, caller: Caller, request_id: int, approve: bool, reason: str, now: datetime
) -> AwardRequestRow:
    """The manager's decision, at the manager's step of the request's path; an approval
    changes the allocation (refused if it would break the call's rules)."""
    row = request_row(s, request_id)
    award = award_row(s, row.award_id)
    require_manager(s, caller, award, ("request", request_id))
    if next_step(RequestKind(row.kind), RequestState(row.state)) is not ReviewStep.MANAGER:
        raise Conflict.of(msg("error.request_needs_recommendation"))
    if not reason.strip():
        raise ValidationError.about("reason", msg("error.say_why_audit_pi"))
    who = Who.of(caller)
    row.decided_by, row.decided_at, row.decision = caller.user_id, now, reason.strip()[:2000]
    if approve:
        if award.state != AwardState.ACTIVE:
            raise Conflict.of(msg("error.award_frozen", award=award.id, state=award.state))
        _apply(s, award, RequestKind(row.kind), row.body, now)
        _set(s, row, RequestState.APPROVED, who, now)
    else:
        _set(s, row, RequestState.REJECTED, who, now)
    notify(
        s,
        project_people(s, award.project_id),
        f"[gpucenter] Your {row.kind} request for award {award.id} was "
        + ("approved" if approve else "not approved"),
        reason.strip(),
        now,
    )
    return row


def withdraw(s: Session, caller: Caller, request_id: int, now: datetime) -> AwardRequestRow:
    row = request_row(s, request_id)
    award = award_row(s, row.award_id)
    if not is_pi(s, caller, award):
        raise NotFound("request", request_id)
    _set(s, row, RequestState.WITHDRAWN, Who.of(caller), now)
    return row


def _allocation(s: Session, award: AwardRow, gpu_type: str, period: str) -> AllocationRow | None:
    for alloc in s.scalars(
        select(AllocationRow).where(
            AllocationRow.award_id == award.id,
            AllocationRow.gpu_type == gpu_type,
            AllocationRow.state != AllocationState.WITHDRAWN,
        )
    ):
        if quarter_of(as_utc(alloc.starts_at)) == period:
            return alloc
    return None


def _apply(
    s: Session, award: AwardRow, kind: RequestKind, body: Mapping[str, Any], now: datetime
) -> None:
    if kind is RequestKind.EXTENSION:
        _extend(s, award, int(body["days"]))
        return
    now_held = reserve.holding(s, award)
    cells = dict(now_held.gpu_hours)
    hours = float(body["gpu_hours"])
    if kind is RequestKind.TRANSFER:
        src = (str(body["from_type"]), str(body["period"]))
        dst = (str(body["to_type"]), str(body["period"]))
        alloc = _allocation(s, award, *src)
        assert alloc is not None
        used = repo.charged_gpu_seconds(s, [alloc.id]).get(alloc.id, 0.0)
        if hours * 3600 > alloc.gpu_seconds - used + 1e-6:
            raise Conflict.of(
                msg("error.unused_short", hours=Num((alloc.gpu_seconds - used) / 3600, 1))
            )
        cells[src] = cells.get(src, 0.0) - hours
        cells[dst] = cells.get(dst, 0.0) + hours
        reserve.check_change(s, award, Award(award.application_id, cells), "gpu_hours")
        alloc.gpu_seconds -= round(hours * 3600)
        _add(s, award, dst[0], dst[1], hours, now)
        award.gpu_hours -= hours  # _add counted it again
        return
    cell = (str(body["gpu_type"]), str(body["period"]))
    cells[cell] = cells.get(cell, 0.0) + hours
    reserve.check_change(s, award, Award(award.application_id, cells), "gpu_hours")
    _add(s, award, cell[0], cell[1], hours, now)
    if kind is RequestKind.RENEWAL:
        reports.move_final(s, award)


def _add(
    s: Session, award: AwardRow, gpu_type: str, period: str, hours: float, now: datetime
) -> AllocationRow:
    """GPU-hours added to the award's allocation of (GPU type, quarter), or a new one."""
    alloc = _allocation(s, award, gpu_type, period)
    if alloc is None:
        start, end = quarter_bounds(period)
        start = max(start, now)
        alloc = AllocationRow(
            project_id=award.project_id,
            gpu_seconds=0,
            starts_at=start,
            ends_at=end,
            created_at=now,
            gpu_type=gpu_type,
            max_concurrent_gpus=0,
            state=AllocationState.ACTIVE,
            award_id=award.id,
        )
        s.add(alloc)
    alloc.gpu_seconds += round(hours * 3600)
    window_h = max((as_utc(alloc.ends_at) - as_utc(alloc.starts_at)).total_seconds() / 3600, 1.0)
    needed = math.ceil(alloc.gpu_seconds / 3600 / window_h)
    alloc.max_concurrent_gpus = max(alloc.max_concurrent_gpus or 0, needed, 1)
    used = repo.charged_gpu_seconds(s, [alloc.id]).get(alloc.id, 0.0) if alloc.id else 0.0
    alloc.state = rounds.allocation_state(alloc, used, now)
    award.gpu_hours += hours
    award.cells = _cells(s, award)
    award.ends_at = max(as_utc(award.ends_at or alloc.ends_at), as_utc(alloc.ends_at))
    s.flush()
    return alloc


def _cells(s: Session, award: AwardRow) -> list[list[Any]]:
    held = reserve.holding(s, award).gpu_hours
    return [[t, p, h] for (t, p), h in sorted(held.items())]


def _extend(s: Session, award: AwardRow, days: int) -> None:
    """The award's last allocations and its end move `days` later; so does its final report."""
    end = as_utc(award.ends_at) if award.ends_at else None
    for alloc in s.scalars(select(AllocationRow).where(AllocationRow.award_id == award.id)):
        if end is None or as_utc(alloc.ends_at) >= end:
            alloc.ends_at = as_utc(alloc.ends_at) + timedelta(days=days)
    if end is not None:
        award.ends_at = end + timedelta(days=days)
    s.flush()
    reports.move_final(s, award)


def requests_of(s: Session, award: AwardRow) -> list[AwardRequestRow]:
    return _requests(s, award.id)


def waiting_for(s: Session, caller: Caller) -> list[AwardRequestRow]:
    """Requests at the caller's step: renewals they are to recommend."""
    stmt = select(AwardRequestRow).where(
        AwardRequestRow.reviewer_id == caller.user_id,
        AwardRequestRow.state == RequestState.SUBMITTED.value,
    )
    return list(s.scalars(stmt.order_by(AwardRequestRow.id)))
