"""The monthly use check: warnings first, then reclaim with an appeal window; commercial use
under a research-only award flagged for the programme manager's review.

Run by the leader once a month (a row unique by month makes a second run, or a second
server, a no-op). An allocation that falls below the programme's use threshold is warned;
if it is still below at the next check, the GPU-hours it cannot use at its pace are to be
reclaimed, after an appeal window the PI can use. The reclaim then lowers the allocation
and the freed capacity waits for a re-offer down the reserve list. Every notice, appeal,
decision and reclaim is in the audit log with its actor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gpucenter.accounting.useit import UsePlan, assess
from gpucenter.allocation.lifecycle import (
    NOTICE_MOVES,
    AwardState,
    NoticeKind,
    NoticeState,
    PermittedUse,
    ReportState,
    check,
)
from gpucenter.allocation.terms import agreement_rules, use_rules
from gpucenter.auth.permissions import Caller, Role
from gpucenter.domain.allocations import AllocationState
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import Conflict, NotFound, ValidationError
from gpucenter.domain.messages import msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import AllocationRow
from gpucenter.persistence.tables_accounting import GpuUtilisationRow, ReclaimRow
from gpucenter.persistence.tables_allocation import AwardRow
from gpucenter.persistence.tables_awards import AwardReportRow, UseCheckRow, UseNoticeRow
from gpucenter.services.awards import reports
from gpucenter.services.awards.agreements import agreement_of
from gpucenter.services.awards.common import (
    SYSTEM,
    Who,
    award_row,
    call_of,
    is_pi,
    managers_of,
    move,
    notify,
    project_people,
    record,
    refuse,
    require_manager,
)

OPEN = (NoticeState.OPEN.value, NoticeState.APPEALED.value)


@dataclass(frozen=True, slots=True)
class CheckSummary:
    month: str
    assessed: int = 0
    warned: int = 0
    reclaim_notices: int = 0
    cleared: int = 0
    commercial: int = 0


def month_of(when: datetime) -> str:
    return f"{when.year:04d}-{when.month:02d}"


def _notices(s: Session, award_id: int, kind: NoticeKind) -> list[UseNoticeRow]:
    stmt = select(UseNoticeRow).where(
        UseNoticeRow.award_id == award_id, UseNoticeRow.kind == kind.value
    )
    return list(s.scalars(stmt.order_by(UseNoticeRow.id)))


def _set(s: Session, row: UseNoticeRow, new: NoticeState, who: Who, now: datetime) -> None:
    kind = NoticeKind(row.kind)
    old = NoticeState(row.state)
    check(NOTICE_MOVES[kind], msg("thing.notice", kind=kind.value, id=row.id), old, new)
    row.state = new.value
    s.flush()
    record(
        s,
        who,
        f"use.{kind.value}.{new.value}",
        now,
        "award",
        row.award_id,
        {"notice": row.id, "allocation": row.allocation_id, "gpu_hours": row.gpu_hours},
    )


def _utilisation(s: Session, allocation_id: int) -> float | None:
    weighted = func.sum(GpuUtilisationRow.mean_util_pct * GpuUtilisationRow.samples)
    total, n = s.execute(
        select(weighted, func.sum(GpuUtilisationRow.samples)).where(
            GpuUtilisationRow.allocation_id == allocation_id
        )
    ).one()
    return float(total) / float(n) if n else None


def run_monthly(s: Session, now: datetime) -> CheckSummary | None:
    """The month's check, once (None if this month's already ran)."""
    month = month_of(now)
    try:
        with s.begin_nested():
            s.add(UseCheckRow(month=month, ran_at=now, summary={}))
    except IntegrityError:
        return None
    check_row = s.scalar(select(UseCheckRow).where(UseCheckRow.month == month))
    assert check_row is not None
    previous = s.scalar(select(func.max(UseCheckRow.ran_at)).where(UseCheckRow.month < month))
    counts = {"assessed": 0, "warned": 0, "reclaim_notices": 0, "cleared": 0, "commercial": 0}
    for award in s.scalars(select(AwardRow).where(AwardRow.state == AwardState.ACTIVE.value)):
        _check_use(s, award, month, now, counts)
        if _commercial_signs(s, award, as_utc(previous) if previous else None):
            counts["commercial"] += _flag(s, SYSTEM, award, month, "signs of commercial use", now)
    summary = CheckSummary(month, **counts)
    check_row.summary = asdict(summary)
    record(s, SYSTEM, "use.check", now, "use_check", month, asdict(summary))
    return summary


def _check_use(
    s: Session, award: AwardRow, month: str, now: datetime, counts: dict[str, int]
) -> None:
    rules = use_rules(call_of(s, award).config)
    allocs = list(
        s.scalars(
            select(AllocationRow).where(
                AllocationRow.award_id == award.id, repo.current_allocation(now)
            )
        )
    )
    used = repo.charged_gpu_seconds(s, [a.id for a in allocs])
    warnings = _notices(s, award.id, NoticeKind.WARNING)
    reclaims = _notices(s, award.id, NoticeKind.RECLAIM)
    for alloc in allocs:
        counts["assessed"] += 1
        plan = UsePlan(
            "allocation",
            alloc.id,
            alloc.project_id,
            float(alloc.gpu_seconds),
            as_utc(alloc.starts_at),
            as_utc(alloc.ends_at),
        )
        spent = used.get(alloc.id, 0.0)
        got = assess(plan, spent, now, _utilisation(s, alloc.id), min_ratio=rules.min_ratio)
        open_warning = [
            w for w in warnings if w.allocation_id == alloc.id and w.state == NoticeState.OPEN
        ]
        if not got.flagged:
            for w in open_warning:
                _set(s, w, NoticeState.CLEARED, SYSTEM, now)
                counts["cleared"] += 1
            continue
        if any(r.allocation_id == alloc.id and r.state in OPEN for r in reclaims):
            continue  # a reclaim is already on its way
        unused = max(alloc.gpu_seconds - spent, 0.0) / 3600
        hours = round(min(got.reclaimable_gpu_hours, unused), 3)
        if any(w.month < month for w in open_warning) and hours >= 1.0:
            _reclaim_notice(s, award, alloc, month, hours, got.reason, rules.appeal_days, now)
            counts["reclaim_notices"] += 1
        elif not any(w.month == month for w in warnings if w.allocation_id == alloc.id):
            _warn(s, award, alloc, month, got.reason, now)
            counts["warned"] += 1


def _warn(
    s: Session, award: AwardRow, alloc: AllocationRow, month: str, why: str, now: datetime
) -> None:
    row = UseNoticeRow(
        award_id=award.id,
        allocation_id=alloc.id,
        kind=NoticeKind.WARNING.value,
        month=month,
        state=NoticeState.OPEN.value,
        reason=why,
        created_at=now,
    )
    s.add(row)
    s.flush()
    record(s, SYSTEM, "use.warning.open", now, "award", award.id, {"notice": row.id, "why": why})
    notify(
        s,
        project_people(s, award.project_id),
        f"[gpucenter] Award {award.id} is under-used",
        f"The monthly check found allocation {alloc.id} {why}. If it is still so at the next "
        "check, the GPU-hours it cannot use will be reclaimed for other applicants.",
        now,
    )


def _reclaim_notice(
    s: Session,
    award: AwardRow,
    alloc: AllocationRow,
    month: str,
    hours: float,
    why: str,
    appeal_days: int,
    now: datetime,
) -> None:
    row = UseNoticeRow(
        award_id=award.id,
        allocation_id=alloc.id,
        kind=NoticeKind.RECLAIM.value,
        month=month,
        state=NoticeState.OPEN.value,
        gpu_hours=hours,
        reason=why,
        appeal_by=now + timedelta(days=appeal_days),
        created_at=now,
    )
    s.add(row)
    s.flush()
    record(
        s,
        SYSTEM,
        "use.reclaim.open",
        now,
        "award",
        award.id,
        {"notice": row.id, "allocation": alloc.id, "gpu_hours": hours, "why": why},
    )
    notify(
        s,
        project_people(s, award.project_id),
        f"[gpucenter] {hours:,.0f} GPU-hours of award {award.id} will be reclaimed",
        f"Allocation {alloc.id} was warned last month and is still {why}. {hours:,.1f} unused "
        f"GPU-hours will be reclaimed on {row.appeal_by:%Y-%m-%d} unless the PI appeals before.",
        now,
    )


def notice_row(s: Session, notice_id: int) -> UseNoticeRow:
    row = s.get(UseNoticeRow, notice_id)
    if row is None:
        raise NotFound("notice", notice_id)
    return row


def appeal(s: Session, caller: Caller, notice_id: int, text: str, now: datetime) -> UseNoticeRow:
    """The PI appeals a reclaim before its date; the programme manager decides."""
    row = notice_row(s, notice_id)
    award = award_row(s, row.award_id)
    if not is_pi(s, caller, award):
        raise NotFound("notice", notice_id)
    if row.kind != NoticeKind.RECLAIM or row.state != NoticeState.OPEN:
        raise Conflict.of(msg("error.reclaim_not_open"))
    if row.appeal_by is not None and now >= as_utc(row.appeal_by):
        raise Conflict.of(msg("error.appeal_window_closed"))
    if not text.strip():
        raise ValidationError.about("appeal", msg("error.appeal_why"))
    row.appeal, row.appealed_at = text.strip()[:5000], now
    _set(s, row, NoticeState.APPEALED, Who.of(caller), now)
    notify(
        s,
        managers_of(s, call_of(s, award).programme_id),
        f"[gpucenter] Appeal against a reclaim of award {award.id}",
        text.strip()[:2000],
        now,
    )
    return row


def decide_appeal(
    s: Session, caller: Caller, notice_id: int, grant: bool, reason: str, now: datetime
) -> UseNoticeRow:
    """Grant the appeal (nothing is reclaimed) or reject it (the reclaim happens now)."""
    row = notice_row(s, notice_id)
    award = award_row(s, row.award_id)
    require_manager(s, caller, award, ("notice", notice_id))
    if row.state != NoticeState.APPEALED:
        raise Conflict.of(msg("error.reclaim_not_appealed"))
    if not reason.strip():
        raise ValidationError.about("reason", msg("error.say_why_audit_pi"))
    row.decided_by, row.decided_at, row.decision = caller.user_id, now, reason.strip()[:2000]
    who = Who.of(caller)
    if grant:
        _set(s, row, NoticeState.WITHDRAWN, who, now)
    else:
        _execute(s, row, who, now)
    notify(
        s,
        project_people(s, award.project_id),
        f"[gpucenter] Your appeal for award {award.id} was "
        + ("granted" if grant else "not granted"),
        reason.strip(),
        now,
    )
    return row


def execute_due(s: Session, now: datetime) -> int:
    """Reclaims whose appeal window closed without an appeal happen (the leader's job)."""
    rows = list(
        s.scalars(
            select(UseNoticeRow).where(
                UseNoticeRow.kind == NoticeKind.RECLAIM.value,
                UseNoticeRow.state == NoticeState.OPEN.value,
                UseNoticeRow.appeal_by <= now,
            )
        )
    )
    for row in rows:
        _execute(s, row, SYSTEM, now)
    return len(rows)


def _execute(s: Session, row: UseNoticeRow, who: Who, now: datetime) -> None:
    award = award_row(s, row.award_id)
    alloc = s.get(AllocationRow, row.allocation_id)
    taken = 0.0
    if alloc is not None:
        taken = lower(s, alloc, row.gpu_hours, f"use it or lose it ({row.month})", who, now)
    row.gpu_hours = taken
    _set(s, row, NoticeState.EXECUTED, who, now)
    call = call_of(s, award)
    notify(
        s,
        [*project_people(s, award.project_id), *managers_of(s, call.programme_id)],
        f"[gpucenter] {taken:,.0f} GPU-hours reclaimed from award {award.id}",
        "They are back in the call's pool; a programme manager can re-offer them to the "
        "reserve list.",
        now,
    )


def lower(
    s: Session, alloc: AllocationRow, gpu_hours: float, reason: str, who: Who, now: datetime
) -> float:
    """Take up to `gpu_hours` of an allocation's unused GPU-hours back; returns how many."""
    used = repo.charged_gpu_seconds(s, [alloc.id]).get(alloc.id, 0.0)
    secs = min(round(gpu_hours * 3600), max(int(alloc.gpu_seconds - used), 0))
    if secs <= 0:
        return 0.0
    alloc.gpu_seconds -= secs
    s.add(
        ReclaimRow(
            allocation_id=alloc.id,
            gpu_seconds=secs,
            reason=reason,
            by_id=who.id,
            created_at=now,
        )
    )
    s.flush()
    record(
        s,
        who,
        "allocation.reclaim",
        now,
        "allocation",
        alloc.id,
        {"gpu_hours": secs / 3600, "reason": reason, "award": alloc.award_id},
    )
    return secs / 3600


def _commercial_signs(s: Session, award: AwardRow, since: datetime | None) -> bool:
    """A research-only award whose team reported commercial use, or recorded a product or
    service, since the last check."""
    agreement = agreement_of(s, award)
    use = (
        agreement.terms.get("permitted_use")
        if agreement is not None
        else agreement_rules(call_of(s, award).config).permitted_use.value
    )
    if use != PermittedUse.RESEARCH:
        return False
    if reports.product_outcomes_since(s, award, since):
        return True
    stmt = select(AwardReportRow).where(
        AwardReportRow.award_id == award.id,
        AwardReportRow.state.in_([ReportState.SUBMITTED.value, ReportState.ACCEPTED.value]),
    )
    if since is not None:
        stmt = stmt.where(AwardReportRow.submitted_at >= since)
    return any(r.answers.get("commercial_use") == "yes" for r in s.scalars(stmt))


def _flag(s: Session, who: Who, award: AwardRow, month: str, why: str, now: datetime) -> int:
    """Raise a commercial-use flag (one per award and month; none while one is open)."""
    if any(
        r.state in (NoticeState.OPEN, NoticeState.CONFIRMED) or r.month == month
        for r in _notices(s, award.id, NoticeKind.COMMERCIAL)
    ):
        return 0
    row = UseNoticeRow(
        award_id=award.id,
        allocation_id=0,
        kind=NoticeKind.COMMERCIAL.value,
        month=month,
        state=NoticeState.OPEN.value,
        reason=why,
        created_at=now,
    )
    s.add(row)
    s.flush()
    record(s, who, "use.commercial.open", now, "award", award.id, {"notice": row.id, "why": why})
    notify(
        s,
        managers_of(s, call_of(s, award).programme_id),
        f"[gpucenter] Award {award.id}: commercial use to review",
        f"Award {award.id} is for research only: {why}. Review it from the call's awards page.",
        now,
    )
    return 1


def flag_commercial(s: Session, caller: Caller, award_id: int, evidence: str, now: datetime) -> int:
    """A programme manager or site operator flags commercial use they noticed."""
    award = award_row(s, award_id)
    manager = caller.has_role(Role.PROGRAMME_MANAGER, call_of(s, award).programme_id)
    if not (manager or caller.has_role(Role.SITE_OPERATOR)):
        refuse(s, caller, award, msg("error.misuse_flag_who"), ("award", award_id))
    if not evidence.strip():
        raise ValidationError.about("evidence", msg("error.evidence_missing"))
    return _flag(s, Who.of(caller), award, month_of(now), evidence.strip()[:2000], now)


def review_commercial(
    s: Session, caller: Caller, notice_id: int, confirm: bool, reason: str, now: datetime
) -> UseNoticeRow:
    """Clear a commercial-use flag, or confirm it: the award is revoked, its unused
    GPU-hours reclaimed and its allocations suspended."""
    row = notice_row(s, notice_id)
    award = award_row(s, row.award_id)
    require_manager(s, caller, award, ("notice", notice_id))
    if row.kind != NoticeKind.COMMERCIAL:
        raise ValidationError.about("notice", msg("error.not_commercial_flag"))
    if not reason.strip():
        raise ValidationError.about("reason", msg("error.say_why_audit_pi"))
    who = Who.of(caller)
    row.decided_by, row.decided_at, row.decision = caller.user_id, now, reason.strip()[:2000]
    if not confirm:
        _set(s, row, NoticeState.CLEARED, who, now)
        return row
    _set(s, row, NoticeState.CONFIRMED, who, now)
    if award.state == AwardState.ACTIVE:
        move(s, award, AwardState.REVOKED, who, now, reason=reason.strip())
        for alloc in s.scalars(select(AllocationRow).where(AllocationRow.award_id == award.id)):
            lower(s, alloc, alloc.gpu_seconds / 3600, "award revoked: " + reason, who, now)
            if alloc.state not in (AllocationState.WITHDRAWN, AllocationState.EXPIRED):
                alloc.state = AllocationState.SUSPENDED
    notify(
        s,
        project_people(s, award.project_id),
        f"[gpucenter] Award {award.id} was revoked",
        reason.strip(),
        now,
    )
    return row


def notices_of(s: Session, award: AwardRow) -> list[UseNoticeRow]:
    stmt = select(UseNoticeRow).where(UseNoticeRow.award_id == award.id)
    return list(s.scalars(stmt.order_by(UseNoticeRow.id)))
