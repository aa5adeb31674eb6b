"""The after-award use cases as the API, the portal and the CLI call them: one transaction
each, permissions checked by the use case, views (never rows) returned."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpucenter.allocation.outcomes import OutcomeInput
from gpucenter.auth.permissions import Caller
from gpucenter.services.awards import (
    agreements,
    checks,
    decision,
    periodic,
    reports,
    requests,
    reserve,
    tiers,
)
from gpucenter.services.awards.views import (
    AwardStateView,
    NoticeView,
    OutcomeView,
    ReportView,
    RequestView,
)
from gpucenter.services.context import AppContext
from gpucenter.services.programmes.views import AwardRunView


def decide(ctx: AppContext, caller: Caller, run_id: int, reason: str = "") -> list[AwardStateView]:
    """Decide a round: offers with agreements, pending allocations, the reserve list."""
    with ctx.sessions.begin() as s:
        return [AwardStateView.of(a) for a in decision.decide(s, caller, run_id, ctx.now(), reason)]


def accept(ctx: AppContext, caller: Caller, award_id: int) -> AwardStateView:
    with ctx.sessions.begin() as s:
        return AwardStateView.of(agreements.accept(s, caller, award_id, ctx.now()))


def countersign(ctx: AppContext, caller: Caller, award_id: int) -> AwardStateView:
    with ctx.sessions.begin() as s:
        return AwardStateView.of(agreements.countersign(s, caller, award_id, ctx.now()))


def decline(ctx: AppContext, caller: Caller, award_id: int, reason: str) -> AwardStateView:
    with ctx.sessions.begin() as s:
        return AwardStateView.of(agreements.decline(s, caller, award_id, reason, ctx.now()))


def propose_reoffer(ctx: AppContext, caller: Caller, call_id: int) -> AwardRunView:
    with ctx.sessions.begin() as s:
        return AwardRunView.of(reserve.propose(s, caller, call_id, ctx.now()))


def approve_reoffer(
    ctx: AppContext, caller: Caller, run_id: int, reason: str = ""
) -> list[AwardStateView]:
    with ctx.sessions.begin() as s:
        made = reserve.approve(s, caller, run_id, ctx.now(), reason)
        return [AwardStateView.of(a) for a in made]


def close_reserve(ctx: AppContext, caller: Caller, call_id: int) -> int:
    with ctx.sessions.begin() as s:
        return reserve.close(s, caller, call_id, ctx.now())


def submit_report(
    ctx: AppContext, caller: Caller, report_id: int, answers: Mapping[str, str]
) -> ReportView:
    with ctx.sessions.begin() as s:
        return ReportView.of(reports.submit(s, caller, report_id, answers, ctx.now()))


def review_report(
    ctx: AppContext, caller: Caller, report_id: int, accept: bool, note: str
) -> ReportView:
    with ctx.sessions.begin() as s:
        return ReportView.of(reports.review(s, caller, report_id, accept, note, ctx.now()))


def record_outcome(
    ctx: AppContext, caller: Caller, award_id: int, raw: OutcomeInput
) -> OutcomeView:
    with ctx.sessions.begin() as s:
        return OutcomeView.of(reports.record_outcome(s, caller, award_id, raw, ctx.now()))


def submit_request(
    ctx: AppContext,
    caller: Caller,
    award_id: int,
    kind: str,
    body: Mapping[str, Any],
    justification: str,
) -> RequestView:
    with ctx.sessions.begin() as s:
        row = requests.submit(s, caller, award_id, kind, body, justification, ctx.now())
        return RequestView.of(row)


def assign_request_reviewer(
    ctx: AppContext, caller: Caller, request_id: int, username: str
) -> RequestView:
    with ctx.sessions.begin() as s:
        return RequestView.of(requests.assign_reviewer(s, caller, request_id, username, ctx.now()))


def recommend(
    ctx: AppContext, caller: Caller, request_id: int, approve: bool, comment: str
) -> RequestView:
    with ctx.sessions.begin() as s:
        row = requests.recommend(s, caller, request_id, approve, comment, ctx.now())
        return RequestView.of(row)


def decide_request(
    ctx: AppContext, caller: Caller, request_id: int, approve: bool, reason: str
) -> RequestView:
    with ctx.sessions.begin() as s:
        return RequestView.of(requests.decide(s, caller, request_id, approve, reason, ctx.now()))


def withdraw_request(ctx: AppContext, caller: Caller, request_id: int) -> RequestView:
    with ctx.sessions.begin() as s:
        return RequestView.of(requests.withdraw(s, caller, request_id, ctx.now()))


def appeal(ctx: AppContext, caller: Caller, notice_id: int, text: str) -> NoticeView:
    with ctx.sessions.begin() as s:
        return NoticeView.of(checks.appeal(s, caller, notice_id, text, ctx.now()))


def decide_appeal(
    ctx: AppContext, caller: Caller, notice_id: int, grant: bool, reason: str
) -> NoticeView:
    with ctx.sessions.begin() as s:
        row = checks.decide_appeal(s, caller, notice_id, grant, reason, ctx.now())
        return NoticeView.of(row)


def flag_commercial(ctx: AppContext, caller: Caller, award_id: int, evidence: str) -> int:
    with ctx.sessions.begin() as s:
        return checks.flag_commercial(s, caller, award_id, evidence, ctx.now())


def review_commercial(
    ctx: AppContext, caller: Caller, notice_id: int, confirm: bool, reason: str
) -> NoticeView:
    with ctx.sessions.begin() as s:
        row = checks.review_commercial(s, caller, notice_id, confirm, reason, ctx.now())
        return NoticeView.of(row)


def decide_fast(
    ctx: AppContext,
    caller: Caller,
    app_id: int,
    approve: bool,
    reason: str,
    gpu_hours: float | None = None,
) -> AwardStateView | None:
    with ctx.sessions.begin() as s:
        made = tiers.decide(s, caller, app_id, approve, reason, ctx.now(), gpu_hours)
        return AwardStateView.of(made) if made is not None else None


def override_award(
    ctx: AppContext, caller: Caller, award_id: int, gpu_hours: float, reason: str
) -> AwardStateView:
    with ctx.sessions.begin() as s:
        return AwardStateView.of(tiers.override(s, caller, award_id, gpu_hours, reason, ctx.now()))


def run_periodic(ctx: AppContext) -> periodic.Tick:
    """What the leader runs; the CLI's `programme aftercare` runs it by hand (idempotent)."""
    return periodic.run_periodic(ctx.sessions, ctx.now())


__all__ = [
    "accept",
    "appeal",
    "approve_reoffer",
    "assign_request_reviewer",
    "close_reserve",
    "countersign",
    "decide",
    "decide_appeal",
    "decide_fast",
    "decide_request",
    "decline",
    "flag_commercial",
    "override_award",
    "propose_reoffer",
    "recommend",
    "record_outcome",
    "review_commercial",
    "review_report",
    "run_periodic",
    "submit_report",
    "submit_request",
    "withdraw_request",
]
