"""Agreements: an award becomes active only when its PI accepts the terms (and the PI's
organisation countersigns, where the programme says so) before the deadline.

Until then its allocations exist but are PENDING (nothing charges them, the scheduler gives
them no weight). A declined or lapsed offer withdraws them and its capacity goes back to the
call's pool, where the reserve list can have it (`reserve.propose`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.allocation.lifecycle import AGREEMENT_MOVES, AgreementState, AwardState, check
from gpucenter.allocation.model import LeaseState
from gpucenter.allocation.terms import agreement_rules, reporting_rules
from gpucenter.auth.permissions import Caller
from gpucenter.domain.allocations import AllocationState
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import Conflict, NotFound, PermissionDenied, ValidationError
from gpucenter.domain.messages import msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import AllocationRow
from gpucenter.persistence.tables_allocation import AwardRow, CallRow, LeaseRow
from gpucenter.persistence.tables_awards import AgreementRow
from gpucenter.services.awards import reports
from gpucenter.services.awards.common import (
    SYSTEM,
    Who,
    application_of,
    award_row,
    call_of,
    is_pi,
    is_signatory,
    managers_of,
    move,
    notify,
    project_people,
    record,
    signatories_of,
    visible_award,
)
from gpucenter.services.programmes import awards as rounds


def terms_of(s: Session, award: AwardRow, call: CallRow) -> dict[str, Any]:
    """The terms as offered: period, GPU-hours or lease, permitted use, reporting duties."""
    rules = agreement_rules(call.config)
    duty = reporting_rules(call.config)
    return {
        "starts_at": as_utc(award.starts_at).isoformat() if award.starts_at else None,
        "ends_at": as_utc(award.ends_at).isoformat() if award.ends_at else None,
        "gpu_hours": award.gpu_hours,
        "lease_gpus": award.lease_gpus,
        "cells": award.cells,
        "permitted_use": rules.permitted_use.value,
        "progress_months": list(duty.progress_months),
        "final_report_days": duty.final_days,
        "overdue_holds_jobs": duty.hold_when_overdue,
        "countersignature": rules.countersignature,
    }


def offer(s: Session, who: Who, award: AwardRow, now: datetime) -> AgreementRow | None:
    """Offer a just-made award (state OFFERED, allocations PENDING) on the call's terms.
    Where the programme asks for no agreement the award is active at once."""
    call = call_of(s, award)
    rules = agreement_rules(call.config)
    if not rules.required:
        activate(s, who, award, now, "the programme asks for no agreement")
        return None
    row = AgreementRow(
        award_id=award.id,
        state=AgreementState.AWAITING_PI.value,
        terms=terms_of(s, award, call),
        countersignature=rules.countersignature,
        offered_at=now,
        respond_by=now + timedelta(days=rules.acceptance_days),
    )
    s.add(row)
    s.flush()
    app = application_of(s, award)
    notify(
        s,
        [app.applicant_id],
        f"[gpucenter] Award offered for '{app.title}': accept by {row.respond_by:%Y-%m-%d}",
        f"The programme offers {award.gpu_hours:,.0f} GPU-hours for '{app.title}'. Read the "
        f"terms and accept or decline by {row.respond_by:%Y-%m-%d %H:%M} UTC; an offer not "
        "accepted by then lapses and goes to the next applicant.",
        now,
    )
    return row


def agreement_of(s: Session, award: AwardRow) -> AgreementRow | None:
    return s.scalar(select(AgreementRow).where(AgreementRow.award_id == award.id))


def _agreement(s: Session, award: AwardRow) -> AgreementRow:
    row = agreement_of(s, award)
    if row is None:
        raise NotFound("agreement of award", award.id)
    return row


def _set(s: Session, row: AgreementRow, new: AgreementState, who: Who, now: datetime) -> None:
    old = AgreementState(row.state)
    check(AGREEMENT_MOVES, msg("thing.agreement", id=row.award_id), old, new)
    row.state = new.value
    s.flush()
    record(s, who, f"agreement.{new.value}", now, "award", row.award_id, {"from": old, "to": new})


def accept(s: Session, caller: Caller, award_id: int, now: datetime) -> AwardRow:
    """The PI accepts the terms; in force at once, or after the organisation countersigns.
    Anyone who may not see the award gets NotFound: ids are sequential, and a refusal
    naming the PI would tell an outsider that award exists."""
    award = visible_award(s, caller, award_id)
    if not is_pi(s, caller, award):
        raise PermissionDenied.of(msg("error.agreement_pi_only"))
    row = _agreement(s, award)
    if row.state != AgreementState.AWAITING_PI:
        raise Conflict.of(msg("error.agreement_nothing_to_accept", state=row.state))
    if now >= as_utc(row.respond_by):
        raise Conflict.of(msg("error.offer_lapsed_accept"))
    who = Who.of(caller)
    row.accepted_by, row.accepted_at = caller.user_id, now
    if row.countersignature:
        _set(s, row, AgreementState.AWAITING_COUNTERSIGNATURE, who, now)
        app = application_of(s, award)
        notify(
            s,
            signatories_of(s, app.organisation_id),
            f"[gpucenter] Countersign the award agreement for '{app.title}'",
            f"The PI accepted the agreement of award {award.id}; it is in force once your "
            f"organisation countersigns it, by {as_utc(row.respond_by):%Y-%m-%d}.",
            now,
        )
        return award
    _set(s, row, AgreementState.IN_FORCE, who, now)
    activate(s, who, award, now, "agreement accepted")
    return award


def countersign(s: Session, caller: Caller, award_id: int, now: datetime) -> AwardRow:
    """The PI's organisation countersigns (a signatory of that organisation only)."""
    award = visible_award(s, caller, award_id)
    if not is_signatory(s, caller, award):
        raise PermissionDenied.of(msg("error.agreement_signatory_only"))
    row = _agreement(s, award)
    if row.state != AgreementState.AWAITING_COUNTERSIGNATURE:
        raise Conflict.of(msg("error.agreement_nothing_to_countersign", state=row.state))
    if now >= as_utc(row.respond_by):
        raise Conflict.of(msg("error.offer_lapsed_countersign"))
    who = Who.of(caller)
    row.countersigned_by, row.countersigned_at = caller.user_id, now
    _set(s, row, AgreementState.IN_FORCE, who, now)
    activate(s, who, award, now, "agreement countersigned")
    return award


def decline(s: Session, caller: Caller, award_id: int, reason: str, now: datetime) -> AwardRow:
    """The PI declines the offer (or the organisation refuses to countersign): the award is
    declined, its allocations withdrawn and its capacity back in the call's pool."""
    award = visible_award(s, caller, award_id)
    # Who before what: an outsider learns nothing of the agreement's state (a 409 naming
    # it would tell them the award exists and how it stands).
    if not (is_pi(s, caller, award) or is_signatory(s, caller, award)):
        raise PermissionDenied.of(msg("error.agreement_decline_who"))
    row = _agreement(s, award)
    pi = is_pi(s, caller, award) and row.state == AgreementState.AWAITING_PI
    org = is_signatory(s, caller, award) and row.state == AgreementState.AWAITING_COUNTERSIGNATURE
    if not (pi or org):
        if row.state not in (AgreementState.AWAITING_PI, AgreementState.AWAITING_COUNTERSIGNATURE):
            raise Conflict.of(msg("error.agreement_not_declinable", state=row.state))
        raise PermissionDenied.of(msg("error.agreement_decline_who"))
    if len(reason) > 2000:
        raise ValidationError.about("reason", msg("error.reason_long"))
    who = Who.of(caller)
    row.reason, row.closed_at = reason.strip(), now
    _set(s, row, AgreementState.DECLINED, who, now)
    move(s, award, AwardState.DECLINED, who, now, reason=reason.strip())
    release(s, award, who, now, "declined")
    return award


def lapse_due(s: Session, now: datetime) -> list[int]:
    """Offers not accepted (or countersigned) by their deadline lapse; returns the awards.
    The leader runs this; the actor is 'system'."""
    waiting = (AgreementState.AWAITING_PI.value, AgreementState.AWAITING_COUNTERSIGNATURE.value)
    rows = list(
        s.scalars(
            select(AgreementRow).where(
                AgreementRow.state.in_(waiting), AgreementRow.respond_by <= now
            )
        )
    )
    lapsed = []
    for row in rows:
        award = award_row(s, row.award_id)
        row.closed_at = now
        _set(s, row, AgreementState.LAPSED, SYSTEM, now)
        move(s, award, AwardState.LAPSED, SYSTEM, now, deadline=as_utc(row.respond_by).isoformat())
        release(s, award, SYSTEM, now, "lapsed")
        lapsed.append(award.id)
    return lapsed


def activate(s: Session, who: Who, award: AwardRow, now: datetime, why: str) -> None:
    """Agreement in force: the award is active, its allocations and lease current, and its
    reports scheduled."""
    move(s, award, AwardState.ACTIVE, who, now, reason=why)
    allocs = list(s.scalars(select(AllocationRow).where(AllocationRow.award_id == award.id)))
    used = repo.charged_gpu_seconds(s, [a.id for a in allocs])
    for alloc in allocs:
        if alloc.state == AllocationState.PENDING:
            alloc.state = AllocationState.ACTIVE
            alloc.state = rounds.allocation_state(alloc, used.get(alloc.id, 0.0), now)
    for lease in s.scalars(select(LeaseRow).where(LeaseRow.award_id == award.id)):
        if lease.state == LeaseState.PENDING:
            lease.state = LeaseState.ACTIVE
    s.flush()
    reports.schedule(s, award, call_of(s, award), now)
    notify(
        s,
        project_people(s, award.project_id),
        f"[gpucenter] Award {award.id} is active",
        f"The agreement of award {award.id} is in force: its {award.gpu_hours:,.0f} GPU-hours "
        "can be used now. Reports fall due as the agreement says.",
        now,
    )


def release(s: Session, award: AwardRow, who: Who, now: datetime, why: str) -> None:
    """Withdraw a declined or lapsed award's allocations and lease; tell the managers that
    capacity came back, so that they can re-offer it down the reserve list."""
    for alloc in s.scalars(select(AllocationRow).where(AllocationRow.award_id == award.id)):
        alloc.state = AllocationState.WITHDRAWN
    for lease in s.scalars(select(LeaseRow).where(LeaseRow.award_id == award.id)):
        lease.state = LeaseState.WITHDRAWN
    s.flush()
    call = call_of(s, award)
    app = application_of(s, award)
    notify(
        s,
        [app.applicant_id, *managers_of(s, call.programme_id)],
        f"[gpucenter] Award {award.id} was {why}: {award.gpu_hours:,.0f} GPU-hours are free",
        f"The offer of award {award.id} ('{app.title}') was {why}. Its GPU-hours are back in "
        f"the pool of call {call.name}; a programme manager can re-offer them to the reserve "
        "list.",
        now,
    )
