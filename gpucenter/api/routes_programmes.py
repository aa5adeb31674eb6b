"""Programme routes: calls, applications, review and awards. Parse, call a service, render.

Every route needs a signed-in caller; who may do what to which programme, call or
application is decided in services/programmes/ (which answer NotFound rather than reveal
another applicant's data). The services return views; the dicts below are the API's shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from gpucenter.auth.permissions import Permission
from gpucenter.http.deps import Ctx, CurrentCaller
from gpucenter.http.permissions import requires
from gpucenter.services.awards import actions as award_actions
from gpucenter.services.awards.views import AwardStateView
from gpucenter.services.programmes import actions
from gpucenter.services.programmes import applications as apps
from gpucenter.services.programmes import calls as prog
from gpucenter.services.programmes.views import (
    ApplicationView,
    AwardRunView,
    AwardView,
    CallView,
    ProgrammeView,
    ReviewView,
)

router = APIRouter(
    prefix="/api/v1/programmes",
    tags=["programmes"],
    dependencies=[requires(Permission.AUTHENTICATED)],
)


class ProgrammeIn(BaseModel):
    name: str = Field(max_length=64)
    owner: str = Field(max_length=200)
    title: str = Field(default="", max_length=300)


class RoleIn(BaseModel):
    username: str = Field(max_length=64)
    role: str = Field(max_length=40)


class CallIn(BaseModel):
    name: str = Field(max_length=64)
    title: str = Field(default="", max_length=300)
    opens_at: datetime
    closes_at: datetime
    capacity: dict[str, dict[str, float]]
    config: dict[str, Any] = Field(default_factory=dict)


class ApplicationIn(BaseModel):
    title: str = Field(max_length=300)
    region: str = Field(max_length=64)
    kind: str = "gpu_hours"
    plan: str = Field(default="", max_length=50_000)
    team: list[str] = Field(default_factory=list, max_length=200)
    requests: list[dict[str, Any]] = Field(default_factory=list, max_length=64)
    min_gpu_hours: float = 0.0
    lease: dict[str, Any] | None = None
    tags: list[str] = Field(default_factory=list, max_length=12)
    parent_award_id: int | None = None


class ReviewIn(BaseModel):
    scores: dict[str, float]
    comment: str = Field(default="", max_length=20_000)


class ConflictIn(BaseModel):
    reason: str = Field(default="", max_length=2_000)


class RunIn(BaseModel):
    overrides: dict[int, float] = Field(default_factory=dict)
    policy_changes: dict[str, Any] = Field(default_factory=dict)


class ReasonIn(BaseModel):
    reason: str = Field(default="", max_length=2_000)


def _programme(p: ProgrammeView) -> dict[str, Any]:
    return {"id": p.id, "name": p.name, "owner": p.owner, "title": p.title}


def _call(c: CallView) -> dict[str, Any]:
    return {
        "id": c.id,
        "programme_id": c.programme_id,
        "name": c.name,
        "title": c.title,
        "opens_at": c.opens_at,
        "closes_at": c.closes_at,
        "state": c.state,
        "config": c.config,
    }


def _app(a: ApplicationView) -> dict[str, Any]:
    return {
        "id": a.id,
        "call_id": a.call_id,
        "title": a.title,
        "state": a.state,
        "kind": a.kind,
        "region": a.region,
        "team": a.team,
        "tags": a.tags,
        "min_gpu_hours": a.min_gpu_hours,
        "lease": a.lease,
        "submitted_at": a.submitted_at,
    }


def _review(r: ReviewView) -> dict[str, Any]:
    return {
        "application_id": r.application_id,
        "reviewer_id": r.reviewer_id,
        "scores": r.scores,
        "total": r.total,
        "comment": r.comment,
        "submitted_at": r.submitted_at,
    }


def _run(r: AwardRunView) -> dict[str, Any]:
    return {
        "id": r.id,
        "call_id": r.call_id,
        "decided": r.decided,
        "method": r.method,
        "gap": r.gap,
        "objective": r.objective,
        "greedy_objective": r.greedy_objective,
        "result": r.result,
    }


def _award(a: AwardView | AwardStateView) -> dict[str, Any]:
    out = {
        "id": a.id,
        "application_id": a.application_id,
        "project_id": a.project_id,
        "gpu_hours": a.gpu_hours,
        "lease_gpus": a.lease_gpus,
        "cells": a.cells,
        "override_reason": a.override_reason,
        "decided_at": a.decided_at,
    }
    if isinstance(a, AwardStateView):
        out |= {"state": a.state, "starts_at": a.starts_at, "ends_at": a.ends_at}
    return out


@router.get("")
def list_programmes(ctx: Ctx, caller: CurrentCaller) -> list[dict[str, Any]]:
    return [_programme(p) for p in actions.list_programmes(ctx)]


@router.post("", status_code=201)
def create_programme(body: ProgrammeIn, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return _programme(actions.create_programme(ctx, caller, body.name, body.owner, body.title))


@router.post("/{programme_id}/roles", status_code=201)
def assign_role(programme_id: int, body: RoleIn, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    actions.assign_role(ctx, caller, programme_id, body.username, body.role)
    return {"programme_id": programme_id, "username": body.username, "role": body.role}


@router.get("/{programme_id}/calls")
def list_calls(programme_id: int, ctx: Ctx, caller: CurrentCaller) -> list[dict[str, Any]]:
    return [_call(c) for c in actions.list_calls(ctx, programme_id)]


@router.post("/{programme_id}/calls", status_code=201)
def create_call(programme_id: int, body: CallIn, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    spec = prog.CallSpec(
        body.name, body.opens_at, body.closes_at, body.capacity, body.title, body.config
    )
    return _call(actions.create_call(ctx, caller, programme_id, spec))


@router.get("/calls/{call_id}/applications")
def list_applications(call_id: int, ctx: Ctx, caller: CurrentCaller) -> list[dict[str, Any]]:
    return [_app(a) for a in actions.list_applications(ctx, caller, call_id)]


@router.post("/calls/{call_id}/applications", status_code=201)
def create_application(
    call_id: int, body: ApplicationIn, ctx: Ctx, caller: CurrentCaller
) -> dict[str, Any]:
    form = apps.ApplicationForm(**body.model_dump())
    return _app(actions.create_application(ctx, caller, call_id, form))


@router.get("/applications/{app_id}")
def get_application(app_id: int, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return _app(actions.get_application(ctx, caller, app_id))


@router.post("/applications/{app_id}/submit")
def submit_application(app_id: int, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return _app(actions.submit_application(ctx, caller, app_id))


@router.post("/applications/{app_id}/withdraw")
def withdraw_application(app_id: int, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return _app(actions.withdraw_application(ctx, caller, app_id))


@router.post("/applications/{app_id}/conflicts", status_code=201)
def declare_conflict(
    app_id: int, body: ConflictIn, ctx: Ctx, caller: CurrentCaller
) -> dict[str, Any]:
    actions.declare_conflict(ctx, caller, app_id, body.reason)
    return {"application_id": app_id, "declared": True}


@router.post("/calls/{call_id}/review-assignments")
def assign_reviews(call_id: int, ctx: Ctx, caller: CurrentCaller) -> dict[str, list[int]]:
    return {str(a): r for a, r in actions.assign_reviews(ctx, caller, call_id).items()}


@router.get("/reviews/mine")
def my_reviews(ctx: Ctx, caller: CurrentCaller) -> list[dict[str, Any]]:
    return [_review(r) for r in actions.my_reviews(ctx, caller)]


@router.get("/applications/{app_id}/reviews")
def reviews_of(app_id: int, ctx: Ctx, caller: CurrentCaller) -> list[dict[str, Any]]:
    return [_review(r) for r in actions.reviews_of(ctx, caller, app_id)]


@router.put("/applications/{app_id}/review")
def submit_review(app_id: int, body: ReviewIn, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return _review(actions.submit_review(ctx, caller, app_id, body.scores, body.comment))


@router.post("/calls/{call_id}/award-runs", status_code=201)
def run_round(call_id: int, body: RunIn, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    """Optimise (a what-if: nothing is decided); overrides and policy changes optional."""
    run = actions.run_round(
        ctx, caller, call_id, overrides=body.overrides, policy_changes=body.policy_changes
    )
    return _run(run)


@router.get("/award-runs/{run_id}")
def get_run(run_id: int, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    return _run(actions.get_run(ctx, caller, run_id))


@router.post("/award-runs/{run_id}/decide")
def decide(run_id: int, body: ReasonIn, ctx: Ctx, caller: CurrentCaller) -> list[dict[str, Any]]:
    return [_award(a) for a in award_actions.decide(ctx, caller, run_id, body.reason)]


@router.get("/calls/{call_id}/awards")
def list_awards(call_id: int, ctx: Ctx, caller: CurrentCaller) -> list[dict[str, Any]]:
    return [_award(a) for a in actions.awards_of_call(ctx, caller, call_id)]


@router.post("/allocations/{allocation_id}/suspend")
def suspend(allocation_id: int, body: ReasonIn, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    row = actions.set_suspended(ctx, caller, allocation_id, True, body.reason)
    return {"id": row.id, "state": row.state}


@router.post("/allocations/{allocation_id}/resume")
def resume(allocation_id: int, body: ReasonIn, ctx: Ctx, caller: CurrentCaller) -> dict[str, Any]:
    row = actions.set_suspended(ctx, caller, allocation_id, False, body.reason)
    return {"id": row.id, "state": row.state}
