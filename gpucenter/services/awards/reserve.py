"""The reserve list and re-offers: capacity a decline, a lapse or a reclaim frees goes down
the decision's ranked reserve list, through the optimiser, under the call's shares and caps.

A re-offer is a run like a round's (`AwardRunRow`, purpose 'reoffer'): the optimiser
proposes, the programme manager reads it and approves, and only then do the reserve
applicants get awards, with projects, allocations and agreements of their own. The standing
awards enter the problem as constants (`allocation.reoffer`), so the re-award keeps every
share and cap the call set (`rule_breaks` is the referee, before the proposal and again at
approval, since awards may have changed in between).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.allocation import (
    Award,
    AwardPlan,
    greedy_plan,
    joined,
    quarter_bounds,
    rule_breaks,
    solve,
)
from gpucenter.allocation.lifecycle import AwardState, ReserveState
from gpucenter.allocation.model import AwardProblem, CallState, Candidate, Cell, LeaseState
from gpucenter.allocation.reoffer import (
    Standing,
    committed_of,
    freed_by_cell,
    relaxed_policy,
    reoffer_round,
)
from gpucenter.auth.permissions import Caller
from gpucenter.domain.allocations import AllocationState
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import Conflict, ValidationError
from gpucenter.domain.messages import msg
from gpucenter.persistence.tables import AllocationRow
from gpucenter.persistence.tables_allocation import (
    ApplicationRow,
    AwardRow,
    AwardRunRow,
    CallRow,
    LeaseRow,
)
from gpucenter.persistence.tables_awards import ReserveRow
from gpucenter.services.awards import agreements
from gpucenter.services.awards.common import Who, notify, project_people, quarter_of, record
from gpucenter.services.programmes import applications as apps
from gpucenter.services.programmes import awards as rounds
from gpucenter.services.programmes import calls as prog

GONE = (AwardState.DECLINED.value, AwardState.LAPSED.value)


def build(s: Session, who: Who, call: CallRow, now: datetime) -> list[ReserveRow]:
    """After a decision: the applications not awarded but eligible (scored above the call's
    threshold), ranked by final score, become the reserve list (the rest stay rejected)."""
    size = call.config.get("reserve_size")
    threshold = prog.policy_of(call.config).min_score
    scores = rounds.final_scores(s, call)
    rejected = list(
        s.scalars(
            select(ApplicationRow).where(
                ApplicationRow.call_id == call.id, ApplicationRow.state == apps.REJECTED
            )
        )
    )
    ranked = sorted(
        (a for a in rejected if scores.get(a.id, 0.0) > 0 and scores[a.id] >= threshold),
        key=lambda a: (-scores[a.id], a.id),
    )
    if size is not None:
        ranked = ranked[: int(size)]
    rows = []
    for rank, app in enumerate(ranked, start=1):
        app.state = apps.RESERVE
        row = ReserveRow(
            call_id=call.id,
            application_id=app.id,
            rank=rank,
            score=scores[app.id],
            state=ReserveState.WAITING.value,
            created_at=now,
        )
        s.add(row)
        rows.append(row)
    s.flush()
    record(
        s,
        who,
        "call.reserve",
        now,
        "call",
        call.id,
        {"reserve": [r.application_id for r in rows]},
    )
    for row, waiting in zip(rows, ranked, strict=True):
        notify(
            s,
            [waiting.applicant_id],
            f"[gpucenter] '{waiting.title}' is number {row.rank} on the reserve list",
            "It was not awarded in this round, but GPU-hours that selected applicants decline or "
            "leave idle are re-offered down this list.",
            now,
        )
    return rows


def holding(s: Session, award: AwardRow) -> Award:
    """What an award holds now, by (GPU type, quarter): its allocations after any reclaim,
    supplement or transfer (withdrawn ones hold nothing), and its lease's GPUs."""
    by_cell: dict[Cell, float] = {}
    stmt = select(AllocationRow).where(
        AllocationRow.award_id == award.id, AllocationRow.state != AllocationState.WITHDRAWN
    )
    for alloc in s.scalars(stmt):
        cell = (alloc.gpu_type or "", quarter_of(as_utc(alloc.starts_at)))
        by_cell[cell] = by_cell.get(cell, 0.0) + alloc.gpu_seconds / 3600
    lease = s.scalar(
        select(LeaseRow).where(
            LeaseRow.award_id == award.id, LeaseRow.state != LeaseState.WITHDRAWN
        )
    )
    return Award(award.application_id, by_cell, lease.gpus if lease is not None else 0)


def standing(s: Session, call: CallRow, leave_out: int | None = None) -> list[Standing]:
    """The call's awards that hold capacity (all but declined and lapsed ones)."""
    stmt = select(AwardRow).where(AwardRow.call_id == call.id, AwardRow.state.not_in(GONE))
    out = []
    for award in s.scalars(stmt.order_by(AwardRow.id)):
        if award.id == leave_out:
            continue
        app = s.get(ApplicationRow, award.application_id)
        assert app is not None
        out.append(Standing(rounds.candidate_of(s, app, 0.0), holding(s, award)))
    return out


def reserve_list(s: Session, call_id: int) -> list[ReserveRow]:
    stmt = select(ReserveRow).where(ReserveRow.call_id == call_id)
    return list(s.scalars(stmt.order_by(ReserveRow.rank)))


def _waiting(s: Session, call: CallRow) -> list[Candidate]:
    out = []
    for row in reserve_list(s, call.id):
        app = s.get(ApplicationRow, row.application_id)
        if row.state == ReserveState.WAITING and app is not None and app.state == apps.RESERVE:
            out.append(rounds.candidate_of(s, app, row.score))
    return out


def _reoffer(s: Session, call: CallRow, now: datetime) -> tuple[rounds.Round, tuple[str, ...]]:
    """The re-offer round of a call now, and the notes on shares it had to relax."""
    gpus = rounds.gpus_of(call)
    cap = prog.capacity_of(s, call.id)
    got = reoffer_round(
        cap, prog.policy_of(call.config), gpus, standing(s, call), _waiting(s, call), now
    )
    rows = {c.app_id: s.get(ApplicationRow, c.app_id) for c in got.problem.candidates}
    rnd = rounds.Round(call, got.problem, {k: v for k, v in rows.items() if v is not None})
    return rnd, got.notes


def freed(s: Session, call_id: int, now: datetime) -> dict[Cell, float]:
    """GPU-hours of the call's quarters not ended and not held by any standing award."""
    call = prog.call_row(s, call_id)
    problem = _reoffer(s, call, now)[0].problem
    return {c: h for c, h in freed_by_cell(problem).items() if quarter_bounds(c[1])[1] > now}


def propose(s: Session, caller: Caller, call_id: int, now: datetime) -> AwardRunRow:
    """The optimiser's re-offer of the freed capacity to the reserve list; decides nothing."""
    call = prog.call_row(s, call_id)
    prog.require_manager(caller, call.programme_id)
    if call.state != CallState.DECIDED:
        raise Conflict.of(msg("error.reoffer_before_decision"))
    rnd, notes = _reoffer(s, call, now)
    if not rnd.problem.candidates:
        raise Conflict.of(msg("error.reserve_empty"))
    if not freed(s, call_id, now):
        raise Conflict.of(msg("error.no_free_hours"))
    plan = solve(rnd.problem, time_limit_s=10.0)
    result = rounds._result(rnd, plan, greedy_plan(rnd.problem))
    result["notes"] = list(notes)
    result["freed"] = [[t, p, h] for (t, p), h in sorted(freed(s, call_id, now).items())]
    run = AwardRunRow(
        call_id=call.id,
        created_by=caller.user_id,
        created_at=now,
        method=plan.method,
        gap=plan.gap,
        objective=plan.objective,
        greedy_objective=result["greedy_objective"],
        decided=False,
        result=result,
        purpose="reoffer",
    )
    s.add(run)
    s.flush()
    record(
        s,
        Who.of(caller),
        "call.reoffer.propose",
        now,
        "call",
        call.id,
        {"run_id": run.id, "awards": sorted(int(a) for a in result["awards"])},
    )
    return run


def approve(
    s: Session, caller: Caller, run_id: int, now: datetime, reason: str = ""
) -> list[AwardRow]:
    """The manager approves a proposed re-offer: each reserve applicant in it gets an award
    with a project, allocations and an agreement to accept. Checked again against the
    call's capacity, shares and caps as they stand now."""
    run = rounds.get_run(s, caller, run_id)
    if run.purpose != "reoffer":
        raise ValidationError.about("run", msg("error.run_is_round"))
    if run.decided:
        raise Conflict.of(msg("error.reoffer_approved", run=run_id))
    call = prog.call_row(s, run.call_id)
    rnd, _ = _reoffer(s, call, now)
    wanted = _plan_of(rnd, run.result.get("awards", {}))
    broken = rule_breaks(rnd.problem, wanted.awards)
    if broken:
        raise Conflict.of(msg("error.reoffer_stale", broken=joined(broken)))
    who = Who.of(caller)
    made = []
    entries = {r.application_id: r for r in reserve_list(s, call.id)}
    for key, body in sorted(run.result["awards"].items(), key=lambda kv: int(kv[0])):
        app = s.get(ApplicationRow, int(key))
        assert app is not None
        award = rounds.make_award(
            s, caller, call, run, app, body, None, now, AllocationState.PENDING
        )
        entry = entries[app.id]
        entry.state, entry.award_id = ReserveState.OFFERED.value, award.id
        agreements.offer(s, who, award, now)
        made.append(award)
    run.decided = True
    s.flush()
    record(
        s,
        who,
        "call.reoffer.approve",
        now,
        "call",
        call.id,
        {"run_id": run.id, "awards": [a.id for a in made], "reason": reason.strip()},
    )
    return made


def _plan_of(rnd: rounds.Round, awards: Mapping[str, Any]) -> AwardPlan:
    out: dict[int, Award] = {}
    for key, body in awards.items():
        cells = {(t, p): float(h) for t, p, h in body["cells"]}
        out[int(key)] = Award(int(key), cells, int(body.get("lease_gpus", 0)))
    return AwardPlan(out, 0.0, "reoffer")


def close(s: Session, caller: Caller, call_id: int, now: datetime) -> int:
    """Close the call's reserve list: those still waiting are told they were not selected."""
    call = prog.call_row(s, call_id)
    prog.require_manager(caller, call.programme_id)
    closed = 0
    for row in reserve_list(s, call_id):
        if row.state != ReserveState.WAITING:
            continue
        row.state = ReserveState.CLOSED.value
        app = s.get(ApplicationRow, row.application_id)
        if app is not None and app.state == apps.RESERVE:
            app.state = apps.REJECTED
            notify(
                s,
                [app.applicant_id],
                f"[gpucenter] The reserve list of '{call.title}' is closed",
                f"'{app.title}' was not selected.",
                now,
            )
        closed += 1
    s.flush()
    record(s, Who.of(caller), "call.reserve.close", now, "call", call.id, {"closed": closed})
    return closed


def check_change(s: Session, award: AwardRow, new: Award, what: str) -> None:
    """Refuse a change of a standing award (a supplement, transfer, renewal or override)
    that would break the call's capacity, a cap or a share: the same referee as a round,
    with the call's other awards as constants. A share the call already misses may not get
    worse (the bounds are relaxed to where the awards stand before the change)."""
    call = prog.call_row(s, award.call_id)
    app = s.get(ApplicationRow, award.application_id)
    assert app is not None
    check_new(s, call, rounds.candidate_of(s, app, 1.0), new, what)


def check_new(
    s: Session, call: CallRow, cand: Candidate, new: Award, what: str, floors: bool = True
) -> None:
    """Refuse an award (new, or the new size of a standing one) that would break the
    call's capacity, a cap or a share, the call's other awards as constants. Without
    `floors` (a fast tier decides one application at a time, and its first award cannot
    meet a share floor) only ceilings, caps and capacity bind."""
    everyone = standing(s, call)
    others = [x for x in everyone if x.candidate.app_id != cand.app_id]
    policy, _ = relaxed_policy(prog.policy_of(call.config), committed_of(everyone))
    if not floors:
        policy = replace(policy, shares=tuple(replace(r, min_share=None) for r in policy.shares))
    problem = AwardProblem(
        prog.capacity_of(s, call.id), (cand,), policy, rounds.gpus_of(call), committed_of(others)
    )
    # The award's own size against its request is the caller's check; here, the call's rules.
    broken = [
        m
        for m in rule_breaks(problem, {cand.app_id: new})
        if m.values.get("app") != str(cand.app_id)
    ]
    if broken:
        raise ValidationError.about(what, msg("error.breaks_rules", broken=joined(broken)))


def tell_team(s: Session, award: AwardRow, subject: str, body: str, now: datetime) -> None:
    notify(s, project_people(s, award.project_id), subject, body, now)
