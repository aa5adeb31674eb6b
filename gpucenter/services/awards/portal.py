"""What the award pages of the portal show, each read in one transaction as views: an award
for its team (agreement, allocations, reports, outcomes, requests, notices), the caller's
awards and countersignatures, a call's awards for its manager, the renewals a reviewer is
to recommend, and the ministry's outcome report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.allocation.lifecycle import (
    AccessTier,
    AgreementState,
    NoticeState,
    ReportState,
)
from gpucenter.allocation.outcomes import OutcomeDimension, OutcomeRow
from gpucenter.allocation.terms import FormField, reporting_rules, tier_rules
from gpucenter.auth.permissions import Caller, Role
from gpucenter.domain.clock import as_utc
from gpucenter.domain.ids import ProjectId
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import AllocationRow, OrganisationRow, ProjectRow, UserRow
from gpucenter.persistence.tables_allocation import ApplicationRow, AwardRow, AwardRunRow
from gpucenter.persistence.tables_awards import AgreementRow, AwardRequestRow
from gpucenter.services.awards import checks, outcomes, reports, requests, reserve, tiers
from gpucenter.services.awards.agreements import agreement_of
from gpucenter.services.awards.common import (
    application_of,
    call_of,
    is_manager,
    is_pi,
    is_signatory,
    visible_award,
)
from gpucenter.services.awards.views import (
    AgreementView,
    AllocationLine,
    AwardStateView,
    NoticeView,
    OutcomeView,
    ReportView,
    RequestView,
    ReserveView,
)
from gpucenter.services.context import AppContext
from gpucenter.services.programmes import calls as prog
from gpucenter.services.programmes import portal as programme_portal
from gpucenter.services.programmes.views import AwardRunView, CallOverview


@dataclass(frozen=True, slots=True)
class AwardPage:
    award: AwardStateView
    title: str
    call: CallOverview
    organisation: str
    project: str
    agreement: AgreementView | None
    allocations: list[AllocationLine]
    reports: list[ReportView]
    outcomes: list[OutcomeView]
    requests: list[RequestView]
    notices: list[NoticeView]
    form: tuple[FormField, ...]
    is_pi: bool
    is_manager: bool
    is_signatory: bool
    held: str | None


def _allocations(s: Session, award: AwardRow) -> list[AllocationLine]:
    rows = list(
        s.scalars(
            select(AllocationRow)
            .where(AllocationRow.award_id == award.id)
            .order_by(AllocationRow.starts_at, AllocationRow.id)
        )
    )
    used = repo.charged_gpu_seconds(s, [a.id for a in rows])
    return [
        AllocationLine(
            a.id,
            a.gpu_type or "",
            as_utc(a.starts_at),
            as_utc(a.ends_at),
            a.gpu_seconds / 3600,
            used.get(a.id, 0.0) / 3600,
            a.state,
        )
        for a in rows
    ]


def award_page(ctx: AppContext, caller: Caller, award_id: int) -> AwardPage:
    """An award for whoever may see it (NotFound for anyone else)."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        award = visible_award(s, caller, award_id)
        app = application_of(s, award)
        call = call_of(s, award)
        org = s.get(OrganisationRow, app.organisation_id)
        project = s.get(ProjectRow, award.project_id)
        agreement = agreement_of(s, award)
        return AwardPage(
            AwardStateView.of(award),
            app.title,
            programme_portal.overview_of(s, call, now),
            org.name if org else "",
            project.name if project else "",
            AgreementView.of(agreement) if agreement is not None else None,
            _allocations(s, award),
            [ReportView.of(r) for r in reports.reports_of(s, award)],
            [OutcomeView.of(o) for o in reports.outcomes_of(s, award)],
            [RequestView.of(r) for r in requests.requests_of(s, award)],
            [NoticeView.of(n) for n in checks.notices_of(s, award)],
            reporting_rules(call.config).form,
            is_pi(s, caller, award),
            is_manager(s, caller, award),
            is_signatory(s, caller, award),
            reports.holds(s, now).get(ProjectId(award.project_id)),
        )


@dataclass(frozen=True, slots=True)
class MyAward:
    """An award in the caller's list: as its team, or to countersign for its organisation."""

    award: AwardStateView
    title: str
    agreement_state: str
    respond_by: datetime | None
    next_report: ReportView | None
    as_signatory: bool


def my_awards(ctx: AppContext, caller: Caller) -> list[MyAward]:
    with ctx.sessions.begin() as s:
        mine = select(AwardRow).where(
            AwardRow.project_id.in_(list(caller.project_ids))
            | AwardRow.application_id.in_(
                select(ApplicationRow.id).where(ApplicationRow.applicant_id == caller.user_id)
            )
        )
        rows = {a.id: (a, False) for a in s.scalars(mine)}
        if (Role.ORG_SIGNATORY, 0) in caller.roles and caller.organisation_id is not None:
            waiting = (
                select(AwardRow)
                .join(AgreementRow, AgreementRow.award_id == AwardRow.id)
                .join(ApplicationRow, ApplicationRow.id == AwardRow.application_id)
                .where(
                    AgreementRow.state == AgreementState.AWAITING_COUNTERSIGNATURE.value,
                    ApplicationRow.organisation_id == caller.organisation_id,
                )
            )
            for a in s.scalars(waiting):
                rows.setdefault(a.id, (a, True))
        out = []
        for award, signatory in sorted(rows.values(), key=lambda x: -x[0].id):
            agreement = agreement_of(s, award)
            due = [r for r in reports.reports_of(s, award) if r.state in reports.OPEN_STATES]
            out.append(
                MyAward(
                    AwardStateView.of(award),
                    application_of(s, award).title,
                    agreement.state if agreement is not None else "",
                    agreement.respond_by if agreement is not None else None,
                    ReportView.of(due[0]) if due else None,
                    signatory,
                )
            )
        return out


@dataclass(frozen=True, slots=True)
class AwardLine:
    award: AwardStateView
    title: str
    organisation: str
    applicant_type: str
    agreement_state: str
    respond_by: datetime | None


@dataclass(frozen=True, slots=True)
class ReserveLine:
    entry: ReserveView
    title: str
    organisation: str
    applicant_type: str


@dataclass(frozen=True, slots=True)
class CallAwards:
    """A call's awards page in the manager's console."""

    call: CallOverview
    tier: str
    awards: list[AwardLine]
    reserve: list[ReserveLine]
    freed: list[tuple[str, str, float]]
    reoffers: list[AwardRunView]
    requests: list[tuple[RequestView, str, str]]  # request, award title, reviewer
    notices: list[tuple[NoticeView, str]]  # notice, award title
    reports: list[tuple[ReportView, str]]  # submitted reports to review, award title
    fast: list[tiers.FastLine]
    reviewers: list[str]


def _org(s: Session, app: ApplicationRow) -> tuple[str, str]:
    org = s.get(OrganisationRow, app.organisation_id)
    return (org.name, org.kind) if org else ("", "")


def call_awards(ctx: AppContext, caller: Caller, call_id: int) -> CallAwards:
    now = ctx.now()
    with ctx.sessions.begin() as s:
        call = prog.call_row(s, call_id)
        prog.require_manager(caller, call.programme_id)
        lines = []
        titles: dict[int, str] = {}
        awards = list(s.scalars(select(AwardRow).where(AwardRow.call_id == call_id)))
        for award in sorted(awards, key=lambda a: a.id):
            app = application_of(s, award)
            titles[award.id] = app.title
            agreement = agreement_of(s, award)
            lines.append(
                AwardLine(
                    AwardStateView.of(award),
                    app.title,
                    *_org(s, app),
                    agreement.state if agreement is not None else "",
                    agreement.respond_by if agreement is not None else None,
                )
            )
        waiting = []
        for entry in reserve.reserve_list(s, call_id):
            listed = s.get(ApplicationRow, entry.application_id)
            if listed is not None:
                line = ReserveLine(ReserveView.of(entry), listed.title, *_org(s, listed))
                waiting.append(line)
        freed = []
        if call.state == "decided":
            freed = [(t, p, h) for (t, p), h in sorted(reserve.freed(s, call_id, now).items())]
        runs = s.scalars(
            select(AwardRunRow)
            .where(AwardRunRow.call_id == call_id, AwardRunRow.purpose == "reoffer")
            .order_by(AwardRunRow.id.desc())
        )
        ids = [a.id for a in awards]
        asked = []
        for r in s.scalars(
            select(AwardRequestRow)
            .where(
                AwardRequestRow.award_id.in_(ids),
                AwardRequestRow.state.in_(requests.OPEN),
            )
            .order_by(AwardRequestRow.id)
        ):
            reviewer = s.get(UserRow, r.reviewer_id) if r.reviewer_id else None
            asked.append(
                (RequestView.of(r), titles[r.award_id], reviewer.username if reviewer else "")
            )
        notices = [
            (NoticeView.of(n), titles[a.id])
            for a in awards
            for n in checks.notices_of(s, a)
            if n.state in (NoticeState.OPEN, NoticeState.APPEALED) and n.kind != "warning"
        ]
        submitted = [
            (ReportView.of(r), titles[a.id])
            for a in awards
            for r in reports.reports_of(s, a)
            if r.state == ReportState.SUBMITTED
        ]
        tier = tier_rules(call.config).tier
        fast = tiers.queue(s, caller, call_id, now) if tier is AccessTier.FAST else []
        names = [
            u.username
            for u in (s.get(UserRow, i) for i in prog.reviewer_ids(s, call.programme_id))
            if u is not None
        ]
        return CallAwards(
            programme_portal.overview_of(s, call, now),
            tier.value,
            lines,
            waiting,
            freed,
            [AwardRunView.of(r) for r in runs],
            asked,
            notices,
            submitted,
            fast,
            names,
        )


def renewal_queue(ctx: AppContext, caller: Caller) -> list[tuple[RequestView, str]]:
    """The renewal requests the caller is to recommend, with their award's title."""
    with ctx.sessions.begin() as s:
        out = []
        for r in requests.waiting_for(s, caller):
            award = s.get(AwardRow, r.award_id)
            if award is not None:
                out.append((RequestView.of(r), application_of(s, award).title))
        return out


def outcome_rows(
    ctx: AppContext, caller: Caller, dims: Sequence[OutcomeDimension]
) -> list[OutcomeRow]:
    with ctx.sessions.begin() as s:
        return outcomes.outcome_report(s, caller, dims)


def outcome_records(
    ctx: AppContext, caller: Caller, dims: Sequence[OutcomeDimension]
) -> list[dict[str, object]]:
    with ctx.sessions.begin() as s:
        return outcomes.outcome_records(s, caller, dims)


__all__ = [
    "AwardLine",
    "AwardPage",
    "CallAwards",
    "MyAward",
    "ReserveLine",
    "award_page",
    "call_awards",
    "my_awards",
    "outcome_records",
    "outcome_rows",
    "renewal_queue",
]
