"""Use it or lose it: the monthly check that awarded GPUs are used, and reclaiming them.

Per allocation and per lease: GPU-hours used against the pro-rata plan, and the mean GPU
utilisation where a dispatcher measured it (`record_utilisation`: NVML on the local executor,
Slurm's GPU utilisation TRES where configured). A programme manager reclaims part of an
under-used allocation with a reason (audited) and may offer it to an application the call
turned down for lack of capacity; that applicant is notified.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gpucenter.accounting.useit import UseAssessment, UsePlan, assess
from gpucenter.allocation.model import LeaseState
from gpucenter.auth.permissions import Caller
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import Conflict, NotFound, ValidationError
from gpucenter.domain.messages import msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import AllocationRow, JobRow, LedgerEntryRow
from gpucenter.persistence.tables_accounting import (
    GpuUtilisationRow,
    NotificationRow,
    ReclaimRow,
)
from gpucenter.persistence.tables_allocation import ApplicationRow, AwardRow, LeaseRow
from gpucenter.services.accounting.ledger import programme_of_allocation, require_accountant
from gpucenter.services.accounting.reports import report_scope
from gpucenter.services.identity import audit
from gpucenter.services.programmes import applications as apps


def record_utilisation(
    s: Session,
    job_id: int,
    run: int,
    mean_util_pct: float,
    samples: int,
    measured_by: str,
    now: datetime,
) -> None:
    """Store a run's measured mean GPU utilisation once (dispatchers call this at job end)."""
    if not 0 <= mean_util_pct <= 100:
        raise ValidationError.about("mean_util_pct", msg("error.between", low=0, high=100))
    if s.scalar(
        select(GpuUtilisationRow.id).where(
            GpuUtilisationRow.job_id == job_id, GpuUtilisationRow.run == run
        )
    ):
        return
    job = s.get(JobRow, job_id)
    if job is None:
        raise NotFound("job", job_id)
    s.add(
        GpuUtilisationRow(
            job_id=job_id,
            run=run,
            allocation_id=job.allocation_id,
            mean_util_pct=mean_util_pct,
            samples=max(samples, 1),
            measured_by=measured_by,
            recorded_at=now,
        )
    )
    s.flush()


def _mean_utilisation(s: Session, allocation_ids: list[int]) -> dict[int, float]:
    if not allocation_ids:
        return {}
    weighted = func.sum(GpuUtilisationRow.mean_util_pct * GpuUtilisationRow.samples)
    rows = s.execute(
        select(GpuUtilisationRow.allocation_id, weighted, func.sum(GpuUtilisationRow.samples))
        .where(GpuUtilisationRow.allocation_id.in_(allocation_ids))
        .group_by(GpuUtilisationRow.allocation_id)
    )
    return {aid: float(w) / float(n) for aid, w, n in rows if n}


def assess_use(s: Session, caller: Caller, at: datetime) -> list[UseAssessment]:
    """Every allocation and lease active at `at` that the caller may report on, assessed."""
    scope = report_scope(caller)
    allocs = [
        a
        for a in s.scalars(select(AllocationRow).where(repo.current_allocation(at)))
        if scope.programme_ids is None or programme_of_allocation(s, a) in scope.programme_ids
    ]
    ids = [a.id for a in allocs]
    used = repo.charged_gpu_seconds(s, ids)
    util = _mean_utilisation(s, ids)
    out = [
        assess(
            UsePlan(
                "allocation",
                a.id,
                a.project_id,
                float(a.gpu_seconds),
                as_utc(a.starts_at),
                as_utc(a.ends_at),
            ),
            used.get(a.id, 0.0),
            at,
            util.get(a.id),
        )
        for a in allocs
    ]
    for lease in s.scalars(
        select(LeaseRow).where(
            LeaseRow.starts_at <= at, LeaseRow.ends_at > at, LeaseRow.state == LeaseState.ACTIVE
        )
    ):
        if scope.programme_ids is not None:
            award = s.get(AwardRow, lease.award_id)
            call_pid = None
            if award is not None:
                from gpucenter.services.programmes.calls import call_row

                call_pid = call_row(s, award.call_id).programme_id
            if call_pid not in scope.programme_ids:
                continue
        start, end = as_utc(lease.starts_at), as_utc(lease.ends_at)
        lease_used = s.scalar(
            select(func.coalesce(func.sum(LedgerEntryRow.gpu_seconds), 0.0))
            .join(AllocationRow, AllocationRow.id == LedgerEntryRow.allocation_id)
            .where(
                AllocationRow.project_id == lease.project_id,
                LedgerEntryRow.gpu_type == lease.gpu_type,
                LedgerEntryRow.created_at >= start,
                LedgerEntryRow.created_at <= at,
            )
        )
        plan = UsePlan(
            "lease",
            lease.id,
            lease.project_id,
            lease.gpus * (end - start).total_seconds(),
            start,
            end,
        )
        out.append(assess(plan, float(lease_used or 0.0), at))
    return out


@dataclass(frozen=True, slots=True)
class Reclaim:
    id: int
    allocation_id: int
    gpu_hours: float
    new_budget_gpu_hours: float
    offered_to_application_id: int | None


def waitlisted(s: Session, caller: Caller, allocation_id: int) -> list[ApplicationRow]:
    """Applications of the allocation's call that were turned down: the next in line."""
    alloc = s.get(AllocationRow, allocation_id)
    if alloc is None:
        raise NotFound("allocation", allocation_id)
    require_accountant(s, caller, alloc)
    award = s.get(AwardRow, alloc.award_id) if alloc.award_id is not None else None
    if award is None:
        return []
    return list(
        s.scalars(
            select(ApplicationRow)
            .where(ApplicationRow.call_id == award.call_id, ApplicationRow.state == apps.REJECTED)
            .order_by(ApplicationRow.submitted_at, ApplicationRow.id)
        )
    )


def reclaim(
    s: Session,
    caller: Caller,
    allocation_id: int,
    gpu_hours: float,
    reason: str,
    now: datetime,
    offer_to_application: int | None = None,
) -> Reclaim:
    """Take `gpu_hours` of unused budget back from an allocation; audited with the reason."""
    alloc = s.get(AllocationRow, allocation_id)
    if alloc is None:
        raise NotFound("allocation", allocation_id)
    require_accountant(s, caller, alloc)
    if not reason.strip():
        raise ValidationError.about("reason", msg("error.reason_audit"))
    if not gpu_hours > 0:
        raise ValidationError.about("gpu_hours", msg("error.more_than_zero"))
    used = repo.charged_gpu_seconds(s, [alloc.id]).get(alloc.id, 0.0)
    secs = round(gpu_hours * 3600)
    if secs > alloc.gpu_seconds - used:
        left = max(alloc.gpu_seconds - used, 0.0) / 3600
        raise Conflict.of(msg("error.reclaim_too_much", left=float(left)))
    offered: ApplicationRow | None = None
    if offer_to_application is not None:
        offered = next(
            (a for a in waitlisted(s, caller, alloc.id) if a.id == offer_to_application), None
        )
        if offered is None:
            raise ValidationError.about("offer_to_application", msg("error.offer_same_call"))
    alloc.gpu_seconds -= secs
    row = ReclaimRow(
        allocation_id=alloc.id,
        gpu_seconds=secs,
        reason=reason.strip(),
        by_id=caller.user_id,
        offered_to_application_id=offer_to_application,
        created_at=now,
    )
    s.add(row)
    s.flush()
    if offered is not None:
        s.add(
            NotificationRow(
                user_id=offered.applicant_id,
                kind="offer",
                subject=f"[gpucenter] {gpu_hours:.0f} GPU-hours are offered to your application",
                body=f"GPU-hours reclaimed from an under-used award are offered to application "
                f"{offered.id} ({offered.title}); the programme will contact you.",
                created_at=now,
            )
        )
    audit.record(
        s,
        "allocation.reclaim",
        actor_id=caller.user_id,
        actor=caller.username,
        at=now,
        target_type="allocation",
        target_id=alloc.id,
        details={
            "gpu_hours": gpu_hours,
            "reason": reason.strip(),
            "offered_to_application": offer_to_application,
            "programme": programme_of_allocation(s, alloc),
        },
    )
    return Reclaim(row.id, alloc.id, secs / 3600, alloc.gpu_seconds / 3600, offer_to_application)


SYSTEM = Caller(user_id=0, username="gpucenter", is_admin=True, project_ids=frozenset())
"""The scheduler leader's own identity for the periodic check (centre-wide scope)."""


def periodic_use_check(s: Session, at: datetime) -> list[UseAssessment]:
    """The monthly use-it-or-lose-it check the scheduler leader runs: assess every current
    allocation and lease, and tell each project's PIs (and members, where it has no PI)
    about each flagged award, once per award and period (`kind` ``use-check``). Reclaiming
    stays a programme manager's decision, with a reason; this only makes sure nobody
    learns of an under-used award at the end of it.

    The allocations of an active award are left to the award's own monthly check
    (`services/awards/checks.run_monthly`: a warning, then a reclaim notice its PI may
    appeal), so a PI hears of one under-used allocation once, not from both."""
    from gpucenter.allocation.lifecycle import AwardState
    from gpucenter.persistence.tables import MembershipRow

    period = at.strftime("%Y-%m")
    under_awards = set(
        s.scalars(
            select(AllocationRow.id)
            .join(AwardRow, AwardRow.id == AllocationRow.award_id)
            .where(AwardRow.state == AwardState.ACTIVE.value)
        )
    )
    flagged = [
        a
        for a in assess_use(s, SYSTEM, at)
        if a.flagged and not (a.kind == "allocation" and a.id in under_awards)
    ]
    for a in flagged:
        members = s.execute(
            select(MembershipRow.user_id, MembershipRow.role).where(
                MembershipRow.project_id == a.project_id
            )
        ).all()
        pis = [uid for uid, role in members if role == "pi"] or [uid for uid, _ in members]
        subject = f"[gpucenter] {period}: {a.kind} {a.id} is under-used ({a.ratio:.0%} of plan)"
        for user_id in pis:
            already = s.scalar(
                select(NotificationRow.id).where(
                    NotificationRow.user_id == user_id,
                    NotificationRow.kind == "use-check",
                    NotificationRow.subject == subject,
                )
            )
            if already is None:
                s.add(
                    NotificationRow(
                        user_id=user_id,
                        kind="use-check",
                        subject=subject,
                        body=f"{a.reason}. Used {a.used_gpu_hours:.1f} of a planned "
                        f"{a.planned_gpu_hours:.1f} GPU-hours so far; about "
                        f"{a.reclaimable_gpu_hours:.1f} GPU-hours may be reclaimed by the "
                        "programme if the pace does not pick up.",
                        created_at=at,
                    )
                )
    return flagged


__all__ = [
    "assess_use",
    "periodic_use_check",
    "reclaim",
    "record_utilisation",
    "waitlisted",
]
