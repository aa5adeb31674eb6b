"""The programme use cases as the API and the portal call them: one transaction each, the
caller's permissions checked by the use case, views (never rows) returned.

Why a layer of its own: the use cases in calls.py, applications.py and awards.py take an
open Session so that they compose (a decision creates projects, allocations and leases in
one transaction; the CLI runs several in one). Routes and pages must not hold a Session or
a row, so each entry here opens the unit of work, runs the use case, and copies what the
reader needs into a frozen view before the transaction ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gpucenter.auth.permissions import Caller
from gpucenter.services.context import AppContext
from gpucenter.services.programmes import applications as apps
from gpucenter.services.programmes import awards
from gpucenter.services.programmes import calls as prog
from gpucenter.services.programmes.views import (
    AllocationStateView,
    ApplicationView,
    AwardRunView,
    AwardView,
    CallView,
    ProgrammeView,
    ReviewView,
)

# -- programmes and calls ------------------------------------------------------------------


def list_programmes(ctx: AppContext) -> list[ProgrammeView]:
    with ctx.sessions.begin() as s:
        return [ProgrammeView.of(p) for p in prog.list_programmes(s)]


def create_programme(
    ctx: AppContext, caller: Caller, name: str, owner: str, title: str = ""
) -> ProgrammeView:
    with ctx.sessions.begin() as s:
        return ProgrammeView.of(prog.create_programme(s, caller, name, owner, ctx.now(), title))


def assign_role(
    ctx: AppContext, caller: Caller, programme_id: int, username: str, role: str
) -> None:
    with ctx.sessions.begin() as s:
        prog.assign_role(s, caller, programme_id, username, role, ctx.now())


def list_calls(ctx: AppContext, programme_id: int | None = None) -> list[CallView]:
    """Every call (of one programme): calls are public to every signed-in user."""
    with ctx.sessions.begin() as s:
        return [CallView.of(c) for c in prog.list_calls(s, programme_id)]


def create_call(
    ctx: AppContext, caller: Caller, programme_id: int, spec: prog.CallSpec
) -> CallView:
    with ctx.sessions.begin() as s:
        return CallView.of(prog.create_call(s, caller, programme_id, spec, ctx.now()))


# -- applications --------------------------------------------------------------------------


def list_applications(ctx: AppContext, caller: Caller, call_id: int) -> list[ApplicationView]:
    with ctx.sessions.begin() as s:
        return [ApplicationView.of(a) for a in apps.list_applications(s, caller, call_id)]


def create_application(
    ctx: AppContext,
    caller: Caller,
    call_id: int,
    form: apps.ApplicationForm,
    *,
    submit: bool = False,
) -> ApplicationView:
    """Save a draft; with `submit`, submit it in the same transaction, so that a submission
    the call refuses leaves no draft behind."""
    with ctx.sessions.begin() as s:
        row = apps.create_application(s, caller, call_id, form, ctx.now())
        if submit:
            row = apps.submit_application(s, caller, row.id, ctx.now())
        return ApplicationView.of(row)


def get_application(ctx: AppContext, caller: Caller, app_id: int) -> ApplicationView:
    with ctx.sessions.begin() as s:
        return ApplicationView.of(apps.visible_application(s, caller, app_id))


def update_application(
    ctx: AppContext,
    caller: Caller,
    app_id: int,
    form: apps.ApplicationForm,
    *,
    submit: bool = False,
) -> ApplicationView:
    """Change a draft; with `submit`, submit it in the same transaction (a submission the
    call refuses leaves the draft as it was)."""
    with ctx.sessions.begin() as s:
        row = apps.update_application(s, caller, app_id, form, ctx.now())
        if submit:
            row = apps.submit_application(s, caller, row.id, ctx.now())
        return ApplicationView.of(row)


def submit_application(ctx: AppContext, caller: Caller, app_id: int) -> ApplicationView:
    with ctx.sessions.begin() as s:
        return ApplicationView.of(apps.submit_application(s, caller, app_id, ctx.now()))


def withdraw_application(ctx: AppContext, caller: Caller, app_id: int) -> ApplicationView:
    with ctx.sessions.begin() as s:
        return ApplicationView.of(apps.withdraw_application(s, caller, app_id, ctx.now()))


# -- review --------------------------------------------------------------------------------


def declare_conflict(ctx: AppContext, caller: Caller, app_id: int, reason: str) -> None:
    with ctx.sessions.begin() as s:
        apps.declare_conflict(s, caller, app_id, reason, ctx.now())


def assign_reviews(ctx: AppContext, caller: Caller, call_id: int) -> dict[int, list[int]]:
    """Application id -> its reviewers' user ids."""
    with ctx.sessions.begin() as s:
        return apps.assign_reviews(s, caller, call_id, ctx.now())


def my_reviews(ctx: AppContext, caller: Caller) -> list[ReviewView]:
    with ctx.sessions.begin() as s:
        return [ReviewView.of(r) for r in apps.my_reviews(s, caller)]


def reviews_of(ctx: AppContext, caller: Caller, app_id: int) -> list[ReviewView]:
    with ctx.sessions.begin() as s:
        return [ReviewView.of(r) for r in apps.reviews_of(s, caller, app_id)]


def submit_review(
    ctx: AppContext, caller: Caller, app_id: int, scores: Mapping[str, float], comment: str
) -> ReviewView:
    with ctx.sessions.begin() as s:
        review = apps.submit_review(s, caller, app_id, scores, comment, ctx.now())
        return ReviewView.of(review)


# -- award rounds --------------------------------------------------------------------------


def run_round(
    ctx: AppContext,
    caller: Caller,
    call_id: int,
    *,
    overrides: Mapping[int, float] | None = None,
    policy_changes: Mapping[str, Any] | None = None,
    override_reasons: Mapping[int, str] | None = None,
) -> AwardRunView:
    """A what-if optimiser run, stored; nothing is decided (services/awards decides)."""
    with ctx.sessions.begin() as s:
        run = awards.run_round(
            s,
            caller,
            call_id,
            ctx.now(),
            overrides=overrides,
            policy_changes=policy_changes,
            override_reasons=override_reasons,
        )
        return AwardRunView.of(run)


def get_run(ctx: AppContext, caller: Caller, run_id: int) -> AwardRunView:
    with ctx.sessions.begin() as s:
        return AwardRunView.of(awards.get_run(s, caller, run_id))


def awards_of_call(ctx: AppContext, caller: Caller, call_id: int) -> list[AwardView]:
    with ctx.sessions.begin() as s:
        return [AwardView.of(a) for a in awards.awards_of_call(s, caller, call_id)]


def set_suspended(
    ctx: AppContext, caller: Caller, allocation_id: int, suspended: bool, reason: str
) -> AllocationStateView:
    with ctx.sessions.begin() as s:
        row = awards.set_suspended(s, caller, allocation_id, suspended, reason, ctx.now())
        return AllocationStateView(row.id, row.state)


__all__ = [
    "assign_reviews",
    "assign_role",
    "awards_of_call",
    "create_application",
    "create_call",
    "create_programme",
    "declare_conflict",
    "get_application",
    "get_run",
    "list_applications",
    "list_calls",
    "list_programmes",
    "my_reviews",
    "reviews_of",
    "run_round",
    "set_suspended",
    "submit_application",
    "submit_review",
    "update_application",
    "withdraw_application",
]
