"""Award rounds: optimise (what-if or for a decision), override, decide, and turn awards into
allocations and leases on projects; allocation states; the leases the scheduler honours.

A decision is one transaction: awards, projects with their PI and team, allocations (one per
GPU type and quarter), leases, application states and the audit entries commit together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.allocation import (
    ApplicantType,
    Award,
    AwardKind,
    AwardPlan,
    AwardProblem,
    Candidate,
    explain,
    greedy_plan,
    joined,
    quarter_bounds,
    rule_breaks,
    solve,
)
from gpucenter.allocation.model import CallState, LeaseState
from gpucenter.allocation.plan import lease_award, objective
from gpucenter.auth.permissions import Caller, Role
from gpucenter.core.model import NodeSnapshot
from gpucenter.core.reservations import AdvanceReservation, choose_nodes
from gpucenter.domain.allocations import SET_STATES, AllocationState
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import Conflict, NotFound, PermissionDenied, ValidationError
from gpucenter.domain.ids import ProjectId
from gpucenter.domain.messages import Message, msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import (
    AllocationRow,
    NodeRow,
    OrganisationRow,
    ProjectRow,
    SiteRow,
    UserRow,
)
from gpucenter.persistence.tables_allocation import (
    ApplicationRow,
    AwardRow,
    AwardRunRow,
    CallRow,
    LeaseRow,
)
from gpucenter.services.identity import accounts
from gpucenter.services.programmes import applications as apps
from gpucenter.services.programmes import calls as prog

ALLOCATION_STATES = tuple(state.value for state in AllocationState)


@dataclass(frozen=True)
class Round:
    """A call loaded for the optimiser: the problem and the rows behind its candidates."""

    call: CallRow
    problem: AwardProblem
    rows: Mapping[int, ApplicationRow]


def candidate_of(s: Session, app: ApplicationRow, score: float) -> Candidate:
    """An application as the optimiser sees it, with its final (already bonused) score."""
    org = s.get(OrganisationRow, app.organisation_id)
    assert org is not None
    kind = AwardKind(app.kind)
    return Candidate(
        app.id,
        org.name,
        ApplicantType(org.kind),
        score,
        kind,
        batch=apps.batch_items(s, app) if kind is AwardKind.GPU_HOURS else (),
        lease=apps._lease_item(app.lease),
        min_gpu_hours=app.min_gpu_hours,
    )


def final_scores(s: Session, call: CallRow) -> dict[int, float]:
    """Each reviewed application's normalised score with the call's regional bonus."""
    policy = prog.policy_of(call.config)
    stmt = select(ApplicationRow.id, ApplicationRow.region)
    regions = {i: r for i, r in s.execute(stmt.where(ApplicationRow.call_id == call.id))}
    return {
        a: policy.final_score(v, regions.get(a, ""))
        for a, v in apps.normalised_scores(s, call.id).items()
    }


def gpus_of(call: CallRow) -> dict[str, int]:
    return {str(t): int(n) for t, n in call.config.get("gpus", {}).items()}


def load_round(s: Session, call: CallRow) -> Round:
    policy = prog.policy_of(call.config)
    scores = final_scores(s, call)
    rows = {
        a.id: a
        for a in s.scalars(
            select(ApplicationRow).where(
                ApplicationRow.call_id == call.id, ApplicationRow.state == apps.SUBMITTED
            )
        )
    }
    cands = [
        candidate_of(s, a, scores.get(a.id, 0.0)) for a in sorted(rows.values(), key=lambda r: r.id)
    ]
    problem = AwardProblem(prog.capacity_of(s, call.id), tuple(cands), policy, gpus_of(call))
    return Round(call, problem, rows)


def _apply_overrides(
    rnd: Round, plan: AwardPlan, overrides: Mapping[int, float]
) -> dict[int, Award]:
    """Set chosen applications' totals (GPU-hours; leases: GPUs), scaling cells pro rata."""
    awards = dict(plan.awards)
    index = {c.app_id: i for i, c in enumerate(rnd.problem.candidates)}
    for app_id, amount in overrides.items():
        if app_id not in index:
            raise ValidationError.about(
                "overrides", msg("error.application_not_in_round", app=app_id)
            )
        cand = rnd.problem.candidates[index[app_id]]
        if amount <= 0:
            awards.pop(app_id, None)
        elif cand.lease is not None:
            awards[app_id] = lease_award(rnd.problem, index[app_id], int(amount))
        else:
            asked = {(b.gpu_type, b.period): b.gpu_hours for b in cand.batch}
            scale = amount / cand.requested_gpu_hours
            awards[app_id] = Award(app_id, {c: h * scale for c, h in asked.items()})
    return awards


def _result(rnd: Round, plan: AwardPlan, greedy: AwardPlan) -> dict[str, Any]:
    why = explain(rnd.problem, plan)
    broken = rule_breaks(rnd.problem, plan.awards)
    return {
        "method": plan.method,
        "status": plan.status,
        "gap": plan.gap,
        "seconds": plan.seconds,
        "objective": plan.objective,
        "greedy_objective": greedy.objective,
        "binding": why.binding,
        "cutoff_score": why.cutoff_score,
        "best_rejected_score": why.best_rejected_score,
        "cells": [_cell(c) for c in why.cells],
        "shares": [_share(x) for x in why.shares],
        "awards": {
            str(a): {
                "gpu_hours": w.total,
                "lease_gpus": w.lease_gpus,
                "cells": [[t, p, h] for (t, p), h in sorted(w.gpu_hours.items())],
            }
            for a, w in plan.awards.items()
        },
        "scores": {str(c.app_id): c.score for c in rnd.problem.candidates},
        "reasons": {str(a): r for a, r in why.reasons.items()},
        "violations": [b.english() for b in broken],
        # The same as messages, for readers in other languages (the run's page, the CLI).
        "reason_codes": {str(a): m.to_json() for a, m in why.why.items()},
        "binding_codes": [m.to_json() for m in why.binding_messages],
        "violation_codes": [b.to_json() for b in broken],
    }


def _cell(c: Any) -> dict[str, Any]:
    return {
        "gpu_type": c.gpu_type,
        "period": c.period,
        "used": c.used,
        "capacity": c.capacity,
        "binding": c.binding,
    }


_CAPACITY_BREAKS = frozenset({"plan.over_capacity", "plan.lease_overlap"})


def _over_capacity(result: Mapping[str, Any]) -> Message | str | None:
    """The run's breaks of capacity (no override may award GPUs the call does not have),
    joined; None when there are none. A run stored before breaks were coded has only the
    English words, which are read as before."""
    coded = result.get("violation_codes")
    if isinstance(coded, list):
        found = [m for m in map(Message.from_json, coded) if m and m.code in _CAPACITY_BREAKS]
        return joined(found) if found else None
    words = [str(v) for v in result.get("violations", [])]
    hit = [v for v in words if v.startswith("capacity") or "leases of" in v]
    return "; ".join(hit) if hit else None


def _share(x: Any) -> dict[str, Any]:
    return {
        "name": x.name,
        "share": x.share,
        "min_share": x.min_share,
        "max_share": x.max_share,
        "binding": x.binding,
    }


def run_round(
    s: Session,
    caller: Caller,
    call_id: int,
    now: datetime,
    *,
    overrides: Mapping[int, float] | None = None,
    policy_changes: Mapping[str, Any] | None = None,
    override_reasons: Mapping[int, str] | None = None,
) -> AwardRunRow:
    """Optimise the call and store the run; decides nothing (a what-if until `decide`).

    `policy_changes` replaces call settings for this run only (e.g. another share floor), so a
    manager can compare scenarios; `overrides` pins chosen applications' awards, and
    `override_reasons` records why, per application, for the decision's audit entry.
    """
    call = prog.call_row(s, call_id)
    prog.require_manager(caller, call.programme_id)
    if call.state == CallState.DECIDED:
        raise Conflict.of(msg("error.call_decided", call=call_id))
    rnd = load_round(s, call)
    if policy_changes:
        cfg = prog.parse_config({**call.config, **policy_changes})
        rnd = replace(rnd, problem=replace(rnd.problem, policy=prog.policy_of(cfg)))
    plan = solve(rnd.problem)
    if overrides:
        awards = _apply_overrides(rnd, plan, overrides)
        plan = AwardPlan(awards, objective(rnd.problem, awards), "override", plan.status, plan.gap)
    result = _result(rnd, plan, greedy_plan(rnd.problem))
    result["policy_changes"] = dict(policy_changes or {})
    result["overrides"] = {str(a): v for a, v in (overrides or {}).items()}
    result["override_reasons"] = {
        str(a): r.strip() for a, r in (override_reasons or {}).items() if r.strip()
    }
    run = AwardRunRow(
        call_id=call_id,
        created_by=caller.user_id,
        created_at=now,
        method=plan.method,
        gap=plan.gap,
        objective=plan.objective,
        greedy_objective=result["greedy_objective"],
        decided=False,
        result=result,
    )
    s.add(run)
    s.flush()
    return run


def get_run(s: Session, caller: Caller, run_id: int) -> AwardRunRow:
    run = s.get(AwardRunRow, run_id)
    if run is None:
        raise NotFound("award run", run_id)
    prog.require_manager(caller, prog.call_row(s, run.call_id).programme_id)
    return run


def decide(
    s: Session,
    caller: Caller,
    run_id: int,
    now: datetime,
    reason: str = "",
    initial: AllocationState = AllocationState.ACTIVE,
) -> list[AwardRow]:
    """Turn a run into awards, projects, allocations and leases. Overridden runs need a reason
    (typed at the decision, or recorded with each override when the run was made).

    A run that breaks capacity is refused; one that departs from a share or cap (only possible
    through overrides) is accepted with the reason, and the audit entry lists the departures.
    Allocations start in `initial`: PENDING where the award waits for its agreement.
    """
    run = get_run(s, caller, run_id)
    call = prog.call_row(s, run.call_id)
    if call.state == CallState.DECIDED:
        raise Conflict.of(msg("error.call_decided", call=call.id))
    result = run.result
    over = _over_capacity(result)
    if over is not None:
        raise ValidationError.about("overrides", msg("error.over_capacity", broken=over))
    overridden = bool(result.get("overrides"))
    if overridden and not reason.strip():
        reason = "; ".join(
            f"application {a}: {r}" for a, r in sorted(result.get("override_reasons", {}).items())
        )
    if overridden and not reason.strip():
        raise ValidationError.about("reason", msg("error.override_reason_award"))
    rows = {
        a.id: a
        for a in s.scalars(
            select(ApplicationRow).where(
                ApplicationRow.call_id == call.id, ApplicationRow.state == apps.SUBMITTED
            )
        )
    }
    awarded: list[AwardRow] = []
    for key, body in sorted(result["awards"].items(), key=lambda kv: int(kv[0])):
        app = rows.get(int(key))
        if app is None:
            raise Conflict.of(msg("error.application_changed", app=key))
        why = reason if overridden else None
        awarded.append(make_award(s, caller, call, run, app, body, why, now, initial))
    for app in rows.values():
        if app.state == apps.SUBMITTED:
            app.state = apps.REJECTED
    run.decided = True
    call.state = CallState.DECIDED
    s.flush()
    prog.audit_event(
        s,
        caller,
        "call.decide",
        now,
        "call",
        call.id,
        {
            "run_id": run.id,
            "awards": len(awarded),
            "method": run.method,
            "gap": run.gap,
            "overrides": result.get("overrides", {}),
            "reason": reason,
            "policy_departures": list(result.get("violations", [])),
        },
    )
    return awarded


def make_award(
    s: Session,
    caller: Caller,
    call: CallRow,
    run: AwardRunRow,
    app: ApplicationRow,
    body: Mapping[str, Any],
    override_reason: str | None,
    now: datetime,
    initial: AllocationState = AllocationState.ACTIVE,
) -> AwardRow:
    """One award of a run (a round, a re-offer or a fast-tier decision): its project, its
    allocations (in `initial`) and lease, the application awarded, audited. A re-offer made
    after a quarter began starts its allocations now, not at the quarter's start."""
    project = _project_for(s, call, app, now)
    award = AwardRow(
        call_id=call.id,
        application_id=app.id,
        run_id=run.id,
        project_id=project.id,
        gpu_hours=float(body["gpu_hours"]),
        cells=body["cells"],
        lease_gpus=int(body["lease_gpus"]),
        override_reason=override_reason,
        decided_by=caller.user_id,
        decided_at=now,
        state="active" if initial is AllocationState.ACTIVE else "offered",
        source=run.purpose or "round",
    )
    s.add(award)
    s.flush()
    if app.kind == AwardKind.LEASE.value and app.lease is not None:
        lease = apps._lease_item(app.lease)
        assert lease is not None
        s.add(
            LeaseRow(
                award_id=award.id,
                project_id=project.id,
                gpu_type=lease.gpu_type,
                gpus=award.lease_gpus,
                site=lease.site,
                starts_at=lease.start,
                ends_at=lease.end,
                state=(
                    LeaseState.ACTIVE if initial is AllocationState.ACTIVE else LeaseState.PENDING
                ),
            )
        )
    first: datetime | None = None
    last: datetime | None = None
    for gpu_type, period, hours in body["cells"]:
        start, end = quarter_bounds(period)
        if app.kind == AwardKind.LEASE.value and app.lease is not None:
            lease = apps._lease_item(app.lease)
            assert lease is not None
            start, end = max(start, lease.start), min(end, lease.end)
            concurrent = award.lease_gpus
        else:
            start = max(start, now) if run.purpose != "round" else start
            concurrent = math.ceil(hours / max((end - start).total_seconds() / 3600, 1.0))
        first = start if first is None else min(first, start)
        last = end if last is None else max(last, end)
        row = AllocationRow(
            project_id=project.id,
            gpu_seconds=round(hours * 3600),
            starts_at=start,
            ends_at=end,
            created_at=now,
            gpu_type=gpu_type,
            max_concurrent_gpus=concurrent,
            state=initial,
            award_id=award.id,
        )
        s.add(row)
    award.starts_at, award.ends_at = first, last
    app.state = apps.AWARDED
    s.flush()
    prog.audit_event(
        s,
        caller,
        "award.decide",
        now,
        "award",
        award.id,
        {
            "application_id": app.id,
            "project": project.name,
            "gpu_hours": award.gpu_hours,
            "lease_gpus": award.lease_gpus,
            "override_reason": override_reason,
            "from": None,
            "to": award.state,
            "source": award.source,
        },
    )
    return award


def _project_for(s: Session, call: CallRow, app: ApplicationRow, now: datetime) -> ProjectRow:
    """The project an award lands on: the parent award's for supplements, else a new one."""
    if app.parent_award_id is not None:
        parent = s.get(AwardRow, app.parent_award_id)
        if parent is None:
            raise NotFound("award", app.parent_award_id)
        project = s.get(ProjectRow, parent.project_id)
        assert project is not None
        return project
    org = s.get(OrganisationRow, app.organisation_id)
    pi = s.get(UserRow, app.applicant_id)
    assert org is not None and pi is not None
    project = accounts.create_project(s, f"{call.name}-a{app.id}", org.name, now, app.title[:300])
    accounts.add_member(s, project.name, pi.username, "pi")
    for username in app.team:
        if username != pi.username:
            accounts.add_member(s, project.name, username)
    return project


def allocation_state(row: AllocationRow, used_gpu_seconds: float, now: datetime) -> AllocationState:
    """Suspension is set by hand and pending/withdrawn by the award's agreement; otherwise
    expired after the end, exhausted when used up."""
    if row.state in SET_STATES:
        return AllocationState(row.state)
    if as_utc(row.ends_at) <= now:
        return AllocationState.EXPIRED
    if used_gpu_seconds >= row.gpu_seconds:
        return AllocationState.EXHAUSTED
    return AllocationState.ACTIVE


def refresh_allocation_states(s: Session, now: datetime) -> int:
    """Store each allocation's derived state; returns how many changed."""
    not_set = AllocationRow.state.not_in([state.value for state in SET_STATES])
    rows = list(s.scalars(select(AllocationRow).where(not_set)))
    used = repo.charged_gpu_seconds(s, [r.id for r in rows])
    changed = 0
    for r in rows:
        new = allocation_state(r, used.get(r.id, 0.0), now)
        if new != r.state:
            r.state, changed = new, changed + 1
    s.flush()
    return changed


def set_suspended(
    s: Session, caller: Caller, allocation_id: int, suspended: bool, reason: str, now: datetime
) -> AllocationRow:
    """Suspend or resume an awarded allocation (its programme's managers, or admins)."""
    row = s.get(AllocationRow, allocation_id)
    if row is None:
        raise NotFound("allocation", allocation_id)
    award = s.get(AwardRow, row.award_id) if row.award_id is not None else None
    if award is None:
        if not caller.is_admin:
            raise PermissionDenied.of(msg("error.allocation_admin_only"))
    else:
        prog.require_manager(caller, prog.call_row(s, award.call_id).programme_id)
    if not reason.strip():
        raise ValidationError.about("reason", msg("error.say_why_audit"))
    if row.state in (AllocationState.PENDING, AllocationState.WITHDRAWN):
        raise Conflict.of(msg("error.allocation_by_agreement", alloc=row.id, state=row.state))
    row.state = AllocationState.SUSPENDED if suspended else AllocationState.ACTIVE
    if not suspended:
        used = repo.charged_gpu_seconds(s, [row.id]).get(row.id, 0.0)
        row.state = allocation_state(row, used, now)
    s.flush()
    prog.audit_event(
        s,
        caller,
        "allocation.suspend" if suspended else "allocation.resume",
        now,
        "allocation",
        row.id,
        {"reason": reason, "state": row.state},
    )
    return row


def active_leases(s: Session, now: datetime) -> list[AdvanceReservation]:
    """Leases whose window has not ended, as reservations on whole nodes of their site.

    Nodes are chosen deterministically (lease id order, `choose_nodes`, no node twice among
    overlapping leases). A lease its site cannot hold is left out rather than failing the
    scheduler; `refresh_allocation_states` and the manager's view show it.
    """
    leases = list(
        s.scalars(select(LeaseRow).where(LeaseRow.state == LeaseState.ACTIVE).order_by(LeaseRow.id))
    )
    out: list[AdvanceReservation] = []
    taken: list[tuple[AdvanceReservation, str]] = []
    for lease in leases:
        start, end = as_utc(lease.starts_at), as_utc(lease.ends_at)
        if end <= now:
            continue
        site = s.scalar(select(SiteRow).where(SiteRow.name == lease.site)) if lease.site else None
        stmt = select(NodeRow)
        if site is not None:
            stmt = stmt.where(NodeRow.site_id == site.id)
        nodes = [NodeSnapshot(n.name, n.gpu_type, n.gpu_count, n.block) for n in s.scalars(stmt)]
        busy = [
            name
            for r, _ in taken
            if r.start < end.timestamp() and start.timestamp() < r.end
            for name in r.nodes
        ]
        try:
            chosen = choose_nodes(nodes, lease.gpu_type, lease.gpus, busy)
        except ValidationError:
            continue
        res = AdvanceReservation(
            f"lease-{lease.id}",
            chosen,
            frozenset({ProjectId(lease.project_id)}),
            start.timestamp(),
            end.timestamp(),
            lease=True,
        )
        taken.append((res, lease.gpu_type))
        out.append(res)
    return out


def awards_of_call(s: Session, caller: Caller, call_id: int) -> list[AwardRow]:
    call = prog.call_row(s, call_id)
    stmt = select(AwardRow).where(AwardRow.call_id == call_id).order_by(AwardRow.id)
    rows = list(s.scalars(stmt))
    if caller.has_role(Role.PROGRAMME_MANAGER, call.programme_id):
        return rows
    return [r for r in rows if r.project_id in caller.project_ids]


def award_of_application(s: Session, caller: Caller, app_id: int) -> AwardRow | None:
    """The award an application won, for whoever may see the application."""
    apps.visible_application(s, caller, app_id)
    return s.scalar(select(AwardRow).where(AwardRow.application_id == app_id))


def runs_of_call(s: Session, caller: Caller, call_id: int) -> list[AwardRunRow]:
    """The call's optimiser runs, newest first; its programme's managers only."""
    call = prog.call_row(s, call_id)
    prog.require_manager(caller, call.programme_id)
    stmt = select(AwardRunRow).where(AwardRunRow.call_id == call_id)
    return list(s.scalars(stmt.order_by(AwardRunRow.id.desc())))


__all__ = [
    "active_leases",
    "award_of_application",
    "awards_of_call",
    "decide",
    "get_run",
    "refresh_allocation_states",
    "run_round",
    "runs_of_call",
    "set_suspended",
]
