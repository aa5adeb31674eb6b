"""After-award routes: agreements, reserve list and re-offers, reports and outcomes, change
requests, monthly-check notices, the fast tier and overrides. Parse, call a service, return
its view as JSON; who may do what is decided in services/awards."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from gpucenter.allocation.outcomes import OutcomeInput, parse_outcome_dimensions
from gpucenter.auth.permissions import Permission
from gpucenter.http.deps import Ctx, CurrentCaller
from gpucenter.http.permissions import requires
from gpucenter.services.awards import actions, portal

router = APIRouter(
    prefix="/api/v1/awards", tags=["awards"], dependencies=[requires(Permission.AUTHENTICATED)]
)


class ReasonIn(BaseModel):
    reason: str = Field(default="", max_length=2_000)


class VerdictIn(BaseModel):
    approve: bool
    reason: str = Field(default="", max_length=2_000)


class AnswersIn(BaseModel):
    answers: dict[str, str] = Field(default_factory=dict, max_length=50)


class ReviewIn(BaseModel):
    accept: bool
    note: str = Field(default="", max_length=2_000)


class OutcomeIn(BaseModel):
    kind: str = Field(max_length=20)
    title: str = Field(default="", max_length=500)
    identifier: str = Field(default="", max_length=500)
    count: int = Field(default=1, ge=0, le=100_000)


class RequestIn(BaseModel):
    kind: str = Field(max_length=20)
    body: dict[str, Any] = Field(default_factory=dict, max_length=10)
    justification: str = Field(max_length=20_000)


class UsernameIn(BaseModel):
    username: str = Field(max_length=64)


class TextIn(BaseModel):
    text: str = Field(max_length=5_000)


class GrantIn(BaseModel):
    grant: bool
    reason: str = Field(max_length=2_000)


class ConfirmIn(BaseModel):
    confirm: bool
    reason: str = Field(max_length=2_000)


class EvidenceIn(BaseModel):
    evidence: str = Field(max_length=2_000)


class OverrideIn(BaseModel):
    gpu_hours: float = Field(gt=0)
    reason: str = Field(max_length=2_000)


class FastIn(BaseModel):
    approve: bool
    reason: str = Field(default="", max_length=2_000)
    gpu_hours: float | None = Field(default=None, gt=0)


@router.get("")
def my_awards(ctx: Ctx, caller: CurrentCaller) -> list[dict[str, Any]]:
    return [asdict(m) for m in portal.my_awards(ctx, caller)]


@router.get("/{award_id}")
def award(award_id: int, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    page = portal.award_page(ctx, caller, award_id)
    out = asdict(page)
    out.pop("form", None)
    out["form"] = [asdict(f) for f in page.form]
    return out


@router.post("/{award_id}/accept")
def accept(award_id: int, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return asdict(actions.accept(ctx, caller, award_id))


@router.post("/{award_id}/countersign")
def countersign(award_id: int, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return asdict(actions.countersign(ctx, caller, award_id))


@router.post("/{award_id}/decline")
def decline(award_id: int, body: ReasonIn, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return asdict(actions.decline(ctx, caller, award_id, body.reason))


@router.post("/reports/{report_id}")
def submit_report(
    report_id: int, body: AnswersIn, ctx: Ctx, caller: CurrentCaller
) -> dict[str, Any]:
    return asdict(actions.submit_report(ctx, caller, report_id, body.answers))


@router.post("/reports/{report_id}/review")
def review_report(
    report_id: int, body: ReviewIn, ctx: Ctx, caller: CurrentCaller
) -> dict[str, Any]:
    return asdict(actions.review_report(ctx, caller, report_id, body.accept, body.note))


@router.post("/{award_id}/outcomes", status_code=201)
def record_outcome(
    award_id: int, body: OutcomeIn, ctx: Ctx, caller: CurrentCaller
) -> dict[str, Any]:
    raw = OutcomeInput(body.kind, body.title, body.identifier, body.count)
    return asdict(actions.record_outcome(ctx, caller, award_id, raw))


@router.post("/{award_id}/requests", status_code=201)
def submit_request(
    award_id: int, body: RequestIn, ctx: Ctx, caller: CurrentCaller
) -> dict[str, Any]:
    view = actions.submit_request(ctx, caller, award_id, body.kind, body.body, body.justification)
    return asdict(view)


@router.post("/requests/{request_id}/reviewer")
def assign_reviewer(
    request_id: int, body: UsernameIn, ctx: Ctx, caller: CurrentCaller
) -> dict[str, Any]:
    return asdict(actions.assign_request_reviewer(ctx, caller, request_id, body.username))


@router.post("/requests/{request_id}/recommend")
def recommend(request_id: int, body: VerdictIn, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return asdict(actions.recommend(ctx, caller, request_id, body.approve, body.reason))


@router.post("/requests/{request_id}/decide")
def decide_request(
    request_id: int, body: VerdictIn, ctx: Ctx, caller: CurrentCaller
) -> dict[str, Any]:
    return asdict(actions.decide_request(ctx, caller, request_id, body.approve, body.reason))


@router.post("/requests/{request_id}/withdraw")
def withdraw_request(request_id: int, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return asdict(actions.withdraw_request(ctx, caller, request_id))


@router.post("/notices/{notice_id}/appeal")
def appeal(notice_id: int, body: TextIn, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return asdict(actions.appeal(ctx, caller, notice_id, body.text))


@router.post("/notices/{notice_id}/decide")
def decide_appeal(notice_id: int, body: GrantIn, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return asdict(actions.decide_appeal(ctx, caller, notice_id, body.grant, body.reason))


@router.post("/notices/{notice_id}/commercial")
def review_commercial(
    notice_id: int, body: ConfirmIn, ctx: Ctx, caller: CurrentCaller
) -> dict[str, Any]:
    return asdict(actions.review_commercial(ctx, caller, notice_id, body.confirm, body.reason))


@router.post("/{award_id}/flag")
def flag(award_id: int, body: EvidenceIn, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return {"flagged": actions.flag_commercial(ctx, caller, award_id, body.evidence)}


@router.post("/{award_id}/override")
def override(award_id: int, body: OverrideIn, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return asdict(actions.override_award(ctx, caller, award_id, body.gpu_hours, body.reason))


@router.get("/calls/{call_id}")
def call_awards(call_id: int, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return asdict(portal.call_awards(ctx, caller, call_id))


@router.post("/calls/{call_id}/reoffers", status_code=201)
def propose(call_id: int, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return asdict(actions.propose_reoffer(ctx, caller, call_id))


@router.post("/reoffers/{run_id}/approve")
def approve(run_id: int, body: ReasonIn, ctx: Ctx, caller: CurrentCaller) -> list[dict[str, Any]]:
    return [asdict(a) for a in actions.approve_reoffer(ctx, caller, run_id, body.reason)]


@router.post("/calls/{call_id}/reserve/close")
def close_reserve(call_id: int, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return {"closed": actions.close_reserve(ctx, caller, call_id)}


@router.post("/applications/{app_id}/fast")
def decide_fast(app_id: int, body: FastIn, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    made = actions.decide_fast(ctx, caller, app_id, body.approve, body.reason, body.gpu_hours)
    return {"award": asdict(made) if made is not None else None}


@router.get("/reports/outcomes")
def outcome_report(
    ctx: Ctx,
    caller: CurrentCaller,
    by: str = Query("programme,applicant_type,region,strategic_field", max_length=100),
) -> list[dict[str, Any]]:
    dims = parse_outcome_dimensions(x for x in by.split(",") if x.strip())
    return portal.outcome_records(ctx, caller, dims)
