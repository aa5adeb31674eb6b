"""The reports a ministry asks for, read from the monthly roll-up (never the raw ledger).

Facts are built from `ledger_monthly` (a few rows per allocation and month, kept by database
triggers) joined once with each allocation's attributes: programme, call, applicant type,
organisation, strategic field. Grouping, valuation and export are pure (accounting.report).
Centre admins see everything; a programme manager sees the allocations of their programmes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gpucenter.accounting.rates import month_bounds, month_range
from gpucenter.accounting.report import (
    NONE_LABEL,
    Dimension,
    Fact,
    ReportRow,
    ShareRow,
    aggregate,
    percentile,
    shares,
)
from gpucenter.allocation.model import STRATEGIC_TECHNOLOGIES
from gpucenter.auth.permissions import Caller, Role
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import PermissionDenied
from gpucenter.domain.messages import msg
from gpucenter.persistence.tables import (
    AllocationRow,
    JobRow,
    NodeRow,
    OrganisationRow,
    ProjectRow,
    SiteRow,
)
from gpucenter.persistence.tables_accounting import LedgerMonthlyRow
from gpucenter.persistence.tables_allocation import (
    ApplicationRow,
    AwardRow,
    CallRow,
    ProgrammeRow,
)
from gpucenter.services.accounting.ledger import rate_book
from gpucenter.services.programmes import calls as prog

_STRATEGIC = frozenset(STRATEGIC_TECHNOLOGIES)


@dataclass(frozen=True, slots=True)
class Scope:
    """What a caller may report on: everything (None) or the allocations of some programmes."""

    programme_ids: frozenset[int] | None


def report_scope(caller: Caller) -> Scope:
    if caller.is_centre_admin or (Role.PROGRAMME_MANAGER, 0) in caller.roles:
        return Scope(None)
    mine = frozenset(pid for role, pid in caller.roles if role == Role.PROGRAMME_MANAGER)
    if not mine:
        raise PermissionDenied.of(msg("error.reports_role"))
    return Scope(mine)


def require_operator(caller: Caller) -> None:
    """Site figures (statements, utilisation, metrics): admins and site operators."""
    if not (caller.is_centre_admin or (Role.SITE_OPERATOR, 0) in caller.roles):
        raise PermissionDenied.of(msg("error.needs_admin_or_operator"))


@dataclass(frozen=True, slots=True)
class AllocationFacts:
    project: str
    organisation: str
    applicant_type: str
    programme: str
    programme_id: int | None
    call: str
    strategic_field: str


def allocation_facts(s: Session) -> dict[int, AllocationFacts]:
    """Each allocation's reporting attributes in one query (allocations are few)."""
    stmt = (
        select(
            AllocationRow.id,
            ProjectRow.name,
            OrganisationRow.name,
            OrganisationRow.kind,
            ProgrammeRow.name,
            ProgrammeRow.id,
            CallRow.name,
            ApplicationRow.tags,
        )
        .join(ProjectRow, ProjectRow.id == AllocationRow.project_id)
        .join(OrganisationRow, OrganisationRow.id == ProjectRow.organisation_id)
        .outerjoin(AwardRow, AwardRow.id == AllocationRow.award_id)
        .outerjoin(CallRow, CallRow.id == AwardRow.call_id)
        .outerjoin(ProgrammeRow, ProgrammeRow.id == CallRow.programme_id)
        .outerjoin(ApplicationRow, ApplicationRow.id == AwardRow.application_id)
    )
    out: dict[int, AllocationFacts] = {}
    for aid, project, org, kind, programme, pid, call, tags in s.execute(stmt):
        field = next((t for t in (tags or []) if t in _STRATEGIC), NONE_LABEL)
        out[aid] = AllocationFacts(
            project,
            org,
            kind,
            programme or NONE_LABEL,
            pid,
            f"{programme}/{call}" if call else NONE_LABEL,
            field,
        )
    return out


def load_facts(s: Session, scope: Scope, first: str, last: str) -> list[Fact]:
    """Roll-up rows of months [first, last] with their allocation's attributes."""
    months = month_range(first, last)
    attrs = allocation_facts(s)
    sites = {sid: name for sid, name in s.execute(select(SiteRow.id, SiteRow.name))}
    rows = s.execute(
        select(
            LedgerMonthlyRow.month,
            LedgerMonthlyRow.allocation_id,
            LedgerMonthlyRow.site_id,
            LedgerMonthlyRow.gpu_type,
            LedgerMonthlyRow.gpu_seconds,
            LedgerMonthlyRow.entries,
        ).where(LedgerMonthlyRow.month >= months[0], LedgerMonthlyRow.month <= months[-1])
    )
    facts: list[Fact] = []
    for month, aid, site_id, gpu_type, secs, entries in rows:
        a = attrs.get(aid)
        if a is None:
            continue
        if scope.programme_ids is not None and a.programme_id not in scope.programme_ids:
            continue
        facts.append(
            Fact(
                month=month,
                programme=a.programme,
                applicant_type=a.applicant_type,
                organisation=a.organisation,
                strategic_field=a.strategic_field,
                site=sites.get(site_id, NONE_LABEL),
                gpu_type=gpu_type,
                project=a.project,
                call=a.call,
                gpu_seconds=float(secs),
                entries=int(entries),
            )
        )
    return facts


def usage_report(
    s: Session, caller: Caller, dims: Sequence[Dimension], first: str, last: str
) -> list[ReportRow]:
    """GPU-hours, normalised GPU-hours and KRW grouped by `dims` over months [first, last]."""
    facts = load_facts(s, report_scope(caller), first, last)
    return aggregate(facts, dims, rate_book(s))


@dataclass(frozen=True, slots=True)
class StatementLine:
    site: str
    gpu_type: str
    gpu_hours: float
    value_krw: float
    entries: int


def supplier_statement(s: Session, caller: Caller, month: str) -> list[StatementLine]:
    """GPU-hours each site (supplier) delivered in `month`, by GPU type, for settlement.

    Only usage that ran on a site counts (credits and transfers have none); refunds for node
    failures do count, against the site whose node failed.
    """
    require_operator(caller)
    rows = aggregate(
        (f for f in load_facts(s, Scope(None), month, month) if f.site != NONE_LABEL),
        [Dimension.SITE, Dimension.GPU_TYPE],
        rate_book(s),
    )
    return [
        StatementLine(r.key["site"], r.key["gpu_type"], r.gpu_hours, r.value_krw, r.entries)
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class SiteUtilisation:
    site: str
    capacity_gpu_hours: float
    delivered_gpu_hours: float

    @property
    def utilisation(self) -> float:
        return (
            self.delivered_gpu_hours / self.capacity_gpu_hours if self.capacity_gpu_hours else 0.0
        )


def site_utilisation(s: Session, caller: Caller, month: str) -> list[SiteUtilisation]:
    """Delivered GPU-hours against the site's GPUs x hours of the month (current inventory)."""
    require_operator(caller)
    start, end = month_bounds(month)
    hours = (end - start).total_seconds() / 3600.0
    gpus: dict[str, int] = {
        name: int(n)
        for name, n in s.execute(
            select(SiteRow.name, func.coalesce(func.sum(NodeRow.gpu_count), 0))
            .outerjoin(NodeRow, NodeRow.site_id == SiteRow.id)
            .group_by(SiteRow.name)
        )
    }
    delivered: dict[str, float] = {}
    for f in load_facts(s, Scope(None), month, month):
        delivered[f.site] = delivered.get(f.site, 0.0) + f.gpu_seconds / 3600.0
    return [
        SiteUtilisation(name, float(gpus[name]) * hours, delivered.get(name, 0.0))
        for name in sorted(gpus)
    ]


@dataclass(frozen=True, slots=True)
class QueueDelay:
    applicant_type: str
    jobs: int
    mean_h: float
    p50_h: float
    p95_h: float


def queue_delay(s: Session, caller: Caller, month: str) -> list[QueueDelay]:
    """Hours from submission to start of the jobs that started in `month`, by applicant type."""
    scope = report_scope(caller)
    start, end = month_bounds(month)
    attrs = allocation_facts(s) if scope.programme_ids is not None else {}
    rows = s.execute(
        select(OrganisationRow.kind, JobRow.submitted_at, JobRow.started_at, JobRow.allocation_id)
        .join(ProjectRow, ProjectRow.id == JobRow.project_id)
        .join(OrganisationRow, OrganisationRow.id == ProjectRow.organisation_id)
        .where(JobRow.started_at >= start, JobRow.started_at < end)
    )
    waits: dict[str, list[float]] = {}
    for kind, submitted, started, aid in rows:
        if scope.programme_ids is not None:
            a = attrs.get(aid) if aid is not None else None
            if a is None or a.programme_id not in scope.programme_ids:
                continue
        delay = max((as_utc(started) - as_utc(submitted)).total_seconds(), 0.0) / 3600.0
        waits.setdefault(kind, []).append(delay)
    return [
        QueueDelay(k, len(v), sum(v) / len(v), percentile(v, 50), percentile(v, 95))
        for k, v in sorted(waits.items())
    ]


def share_report(s: Session, caller: Caller, call_id: int, first: str, last: str) -> list[ShareRow]:
    """GPU-hours delivered to each share rule's applicant types in a call's allocations,
    against the floors and ceilings its policy set."""
    call = prog.call_row(s, call_id)
    scope = report_scope(caller)
    if scope.programme_ids is not None and call.programme_id not in scope.programme_ids:
        raise PermissionDenied.of(msg("error.call_not_managed"))
    programme = prog.programme(s, call.programme_id)
    label = f"{programme.name}/{call.name}"
    delivered: dict[str, float] = {}
    for f in load_facts(s, scope, first, last):
        if f.call == label:
            delivered[f.applicant_type] = (
                delivered.get(f.applicant_type, 0.0) + f.gpu_seconds / 3600
            )
    rules = [
        (str(r["name"]), list(r["applicant_types"]), r.get("min_share"), r.get("max_share"))
        for r in (call.config or {}).get("shares", [])
    ]
    rules += [(t, [t], None, None) for t in sorted(delivered)]
    return shares(delivered, rules)


def report_calls(s: Session, caller: Caller) -> list[tuple[int, str]]:
    """(id, "programme/call") of the calls whose share report the caller may read, by id
    (every call for centre admins); the report page offers these."""
    scope = report_scope(caller)
    stmt = select(CallRow.id, ProgrammeRow.name, CallRow.name, CallRow.programme_id).join(
        ProgrammeRow, ProgrammeRow.id == CallRow.programme_id
    )
    return [
        (int(cid), f"{p}/{c}")
        for cid, p, c, pid in s.execute(stmt.order_by(CallRow.id))
        if scope.programme_ids is None or pid in scope.programme_ids
    ]


def now_month(now: datetime) -> str:
    return f"{now.year:04d}-{now.month:02d}"


# --- The same reports as flat records for CSV, XLSX and JSON (API and portal downloads) ---


def usage_records(
    s: Session, caller: Caller, dims: Sequence[Dimension], first: str, last: str
) -> list[dict[str, Any]]:
    return [r.flat() for r in usage_report(s, caller, dims, first, last)]


def statement_records(s: Session, caller: Caller, month: str) -> list[dict[str, Any]]:
    return [{"month": month, **asdict(x)} for x in supplier_statement(s, caller, month)]


def utilisation_records(s: Session, caller: Caller, month: str) -> list[dict[str, Any]]:
    return [
        {"month": month, **asdict(u), "utilisation": u.utilisation}
        for u in site_utilisation(s, caller, month)
    ]


def queue_delay_records(s: Session, caller: Caller, month: str) -> list[dict[str, Any]]:
    return [{"month": month, **asdict(d)} for d in queue_delay(s, caller, month)]


def share_records(
    s: Session, caller: Caller, call_id: int, first: str, last: str
) -> list[dict[str, Any]]:
    return [
        {**asdict(r), "applicant_types": ",".join(r.applicant_types), "within": r.within}
        for r in share_report(s, caller, call_id, first, last)
    ]


__all__ = [
    "now_month",
    "queue_delay",
    "queue_delay_records",
    "report_calls",
    "report_scope",
    "require_operator",
    "share_records",
    "share_report",
    "site_utilisation",
    "statement_records",
    "supplier_statement",
    "usage_records",
    "usage_report",
    "utilisation_records",
]
