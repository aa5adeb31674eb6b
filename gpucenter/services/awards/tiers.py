"""The fast tier, and a manager's override of one standing award.

A fast-tier call (config `tier.kind: fast`) gives small awards without peer review: the
call's automatic eligibility checks run at submission (`applications.fast_tier_checks`),
and the programme manager decides each application within the programme's days. A fast
award is an award like any other (an agreement to accept, reports, monthly checks) and
takes capacity under the same shares and caps.

An override changes one standing award's GPU-hours after the decision, with a reason that
goes to the audit log; capacity, shares and caps still hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.allocation import Award, AwardProblem
from gpucenter.allocation.lifecycle import AccessTier, AwardState
from gpucenter.allocation.model import Candidate, Cell
from gpucenter.allocation.plan import lease_award
from gpucenter.allocation.terms import tier_rules
from gpucenter.auth.permissions import Caller
from gpucenter.domain.allocations import AllocationState
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import Conflict, NotFound, ValidationError
from gpucenter.domain.messages import msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import AllocationRow
from gpucenter.persistence.tables_allocation import ApplicationRow, AwardRow, AwardRunRow, CallRow
from gpucenter.services.awards import agreements, reserve
from gpucenter.services.awards.common import (
    Who,
    award_row,
    notify,
    project_people,
    quarter_of,
    record,
    require_manager,
)
from gpucenter.services.programmes import applications as apps
from gpucenter.services.programmes import awards as rounds
from gpucenter.services.programmes import calls as prog


@dataclass(frozen=True, slots=True)
class FastLine:
    """A fast-tier application waiting for the manager, and by when it must be decided."""

    application_id: int
    title: str
    requested: float
    submitted_at: datetime
    decide_by: datetime
    late: bool


def _fast_call(s: Session, caller: Caller, call_id: int) -> CallRow:
    call = prog.call_row(s, call_id)
    prog.require_manager(caller, call.programme_id)
    if tier_rules(call.config).tier is not AccessTier.FAST:
        raise ValidationError.about("call", msg("error.call_not_fast"))
    return call


def queue(s: Session, caller: Caller, call_id: int, now: datetime) -> list[FastLine]:
    """The fast tier's submitted applications, oldest first, with their decision dates."""
    call = _fast_call(s, caller, call_id)
    days = tier_rules(call.config).decide_within_days
    rows = s.scalars(
        select(ApplicationRow)
        .where(ApplicationRow.call_id == call_id, ApplicationRow.state == apps.SUBMITTED)
        .order_by(ApplicationRow.submitted_at, ApplicationRow.id)
    )
    out = []
    for app in rows:
        submitted = as_utc(app.submitted_at or app.created_at)
        due = submitted + timedelta(days=days)
        cand = rounds.candidate_of(s, app, 1.0)
        out.append(FastLine(app.id, app.title, cand.requested_gpu_hours, submitted, due, now > due))
    return out


def _award_of(cand: Candidate, capacity: Mapping[Cell, float], gpu_hours: float | None) -> Award:
    """The application's request, or `gpu_hours` of it spread pro rata (a lease: GPUs)."""
    if cand.lease is not None:
        gpus = cand.lease.gpus if gpu_hours is None else int(gpu_hours)
        return lease_award(AwardProblem(capacity, (cand,)), 0, gpus)
    total = cand.requested_gpu_hours if gpu_hours is None else gpu_hours
    scale = total / cand.requested_gpu_hours
    return Award(cand.app_id, {(b.gpu_type, b.period): b.gpu_hours * scale for b in cand.batch})


def _body(award: Award) -> dict[str, Any]:
    return {
        "gpu_hours": award.total,
        "lease_gpus": award.lease_gpus,
        "cells": [[t, p, h] for (t, p), h in sorted(award.gpu_hours.items())],
    }


def decide(
    s: Session,
    caller: Caller,
    app_id: int,
    approve: bool,
    reason: str,
    now: datetime,
    gpu_hours: float | None = None,
) -> AwardRow | None:
    """Award a fast-tier application (what it asked for, or `gpu_hours` of it), or not."""
    app = s.get(ApplicationRow, app_id)
    if app is None:
        raise NotFound("application", app_id)
    call = _fast_call(s, caller, app.call_id)
    if app.state != apps.SUBMITTED:
        raise Conflict.of(msg("error.application_decided", app=app_id, state=app.state))
    who = Who.of(caller)
    if not approve:
        if not reason.strip():
            raise ValidationError.about("reason", msg("error.say_why_applicant_audit"))
        app.state = apps.REJECTED
        record(s, who, "application.reject", now, "application", app.id, {"reason": reason})
        notify(s, [app.applicant_id], f"[gpucenter] '{app.title}' was not selected", reason, now)
        return None
    cand = rounds.candidate_of(s, app, 1.0)
    if gpu_hours is not None and not 0 < gpu_hours <= cand.requested_gpu_hours:
        raise ValidationError.about("gpu_hours", msg("error.award_amount"))
    award = _award_of(cand, prog.capacity_of(s, call.id), gpu_hours)
    if award.total + 1e-6 < cand.useful_minimum:
        raise ValidationError.about("gpu_hours", msg("error.award_below_minimum"))
    reserve.check_new(s, call, cand, award, "gpu_hours", floors=False)
    body = _body(award)
    run = AwardRunRow(
        call_id=call.id,
        created_by=caller.user_id,
        created_at=now,
        method="fast-tier",
        gap=0.0,
        objective=0.0,
        greedy_objective=0.0,
        decided=True,
        result={"awards": {str(app.id): body}, "reason": reason.strip()},
        purpose="fast",
    )
    s.add(run)
    s.flush()
    why = reason.strip() or None
    made = rounds.make_award(s, caller, call, run, app, body, why, now, AllocationState.PENDING)
    agreements.offer(s, who, made, now)
    return made


def override(
    s: Session, caller: Caller, award_id: int, gpu_hours: float, reason: str, now: datetime
) -> AwardRow:
    """Set one standing award's GPU-hours (never below what it used), pro rata over its
    allocations, with a reason for the audit log; capacity, shares and caps still hold."""
    award = award_row(s, award_id)
    require_manager(s, caller, award)
    if not reason.strip():
        raise ValidationError.about("reason", msg("error.override_reason"))
    if award.state not in (AwardState.OFFERED, AwardState.ACTIVE):
        raise Conflict.of(msg("error.award_frozen", award=award.id, state=award.state))
    if award.lease_gpus:
        raise ValidationError.about("gpu_hours", msg("error.lease_override"))
    allocs = list(
        s.scalars(
            select(AllocationRow).where(
                AllocationRow.award_id == award.id,
                AllocationRow.state != AllocationState.WITHDRAWN,
            )
        )
    )
    total = sum(a.gpu_seconds for a in allocs) / 3600
    if not gpu_hours > 0 or total <= 0:
        raise ValidationError.about("gpu_hours", msg("error.value_positive"))
    used = repo.charged_gpu_seconds(s, [a.id for a in allocs])
    scale = gpu_hours / total
    cells: dict[tuple[str, str], float] = {}
    for a in allocs:
        cell = (a.gpu_type or "", quarter_of(as_utc(a.starts_at)))
        cells[cell] = cells.get(cell, 0.0) + a.gpu_seconds / 3600 * scale
        if a.gpu_seconds * scale < used.get(a.id, 0.0):
            raise ValidationError.about("gpu_hours", msg("error.award_below_used"))
    reserve.check_change(s, award, Award(award.application_id, cells), "gpu_hours")
    before = award.gpu_hours
    for a in allocs:
        a.gpu_seconds = round(a.gpu_seconds * scale)
        a.state = rounds.allocation_state(a, used.get(a.id, 0.0), now)
    award.gpu_hours = gpu_hours
    award.override_reason = reason.strip()
    award.cells = [[t, p, h] for (t, p), h in sorted(cells.items())]
    s.flush()
    record(
        s,
        Who.of(caller),
        "award.override",
        now,
        "award",
        award.id,
        {"from_gpu_hours": before, "to_gpu_hours": gpu_hours, "reason": reason.strip()},
    )
    notify(
        s,
        project_people(s, award.project_id),
        f"[gpucenter] Award {award.id} now has {gpu_hours:,.0f} GPU-hours",
        reason.strip(),
        now,
    )
    return award
