"""An award plan, its score and the rules it must keep, checked independently of any solver.

`violations` is the referee: tests run it on the optimiser's plan, on the greedy baseline's
and on a programme manager's override, so no solver bug can slip an infeasible award past us.
`rule_breaks` says the same as messages, for a reader in any language.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gpucenter.allocation.columns import active_at, lease_cells, lease_instants
from gpucenter.allocation.model import Award, AwardProblem, Cell
from gpucenter.domain.messages import Message, Num

TOL = 1e-6


@dataclass(frozen=True, slots=True)
class AwardPlan:
    """Awards by application id (absent = nothing), with how the solver got there."""

    awards: Mapping[int, Award]
    objective: float
    method: str  # "milp", "greedy", "milp+greedy-fallback", "override"
    status: str = "optimal"
    gap: float = 0.0  # relative MIP gap reported by the solver (0 for a heuristic)
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default=())

    def total(self, app_id: int) -> float:
        award = self.awards.get(app_id)
        return award.total if award is not None else 0.0


def lease_award(problem: AwardProblem, index: int, gpus: int) -> Award:
    """The GPU-hours a lease of `gpus` takes in each quarter it touches."""
    cand = problem.candidates[index]
    return Award(
        cand.app_id,
        {cell: gpus * h for cell, h in lease_cells(problem, cand)},
        lease_gpus=gpus,
    )


def objective(problem: AwardProblem, awards: Mapping[int, Award]) -> float:
    """Sum of score x awarded GPU-hours: the quantity the optimiser maximises."""
    score = {c.app_id: c.score for c in problem.candidates}
    return float(sum(score[a] * award.total for a, award in awards.items()))


def usage_by_cell(
    awards: Mapping[int, Award], standing: Mapping[Cell, float] | None = None
) -> dict[Cell, float]:
    """GPU-hours used per cell by `awards` (plus `standing` awards' use, when given)."""
    used: dict[Cell, float] = defaultdict(float, standing or {})
    for award in awards.values():
        for cell, h in award.gpu_hours.items():
            used[cell] += h
    return dict(used)


def usage_by_org(problem: AwardProblem, awards: Mapping[int, Award]) -> dict[str, float]:
    """GPU-hours per organisation, standing awards included."""
    org = {c.app_id: c.organisation for c in problem.candidates}
    used: dict[str, float] = defaultdict(float, problem.committed.by_org)
    for a, award in awards.items():
        used[org[a]] += award.total
    return dict(used)


def shares(problem: AwardProblem, awards: Mapping[int, Award]) -> dict[str, float]:
    """Achieved share of awarded GPU-hours per share rule, standing awards included."""
    kind = {c.app_id: c.applicant_type for c in problem.candidates}
    standing = problem.committed
    total = sum(a.total for a in awards.values()) + standing.total
    out: dict[str, float] = {}
    for rule in problem.policy.shares:
        part = sum(a.total for i, a in awards.items() if kind[i] in rule.applicant_types)
        part += sum(h for t, h in standing.by_type.items() if t in rule.applicant_types)
        out[rule.name] = part / total if total > 0 else 0.0
    return out


def violations(problem: AwardProblem, awards: Mapping[int, Award], tol: float = TOL) -> list[str]:
    """Every rule the plan breaks, in English; empty when the plan is feasible."""
    return [m.english() for m in rule_breaks(problem, awards, tol)]


def joined(messages: Sequence[Message]) -> Message:
    """Several rule breaks as one phrase ("a; b; c") in the reader's language."""
    if not messages:
        raise ValueError("nothing to join")
    out = messages[-1]
    for m in reversed(messages[:-1]):
        out = Message.of("plan.joined", first=m, rest=out)
    return out


def rule_breaks(
    problem: AwardProblem, awards: Mapping[int, Award], tol: float = TOL
) -> list[Message]:
    """Every rule the plan breaks, as messages (`plan.*`); empty when the plan is feasible.
    A break that concerns one application carries its id as the `app` parameter."""
    found: list[Message] = []
    by_id = {c.app_id: c for c in problem.candidates}
    for a, award in awards.items():
        cand = by_id.get(a)
        app = str(a)
        if cand is None:
            found.append(Message.of("plan.not_candidate", app=app))
            continue
        total = award.total
        if total <= tol:
            continue
        if total + tol * max(1.0, total) < cand.useful_minimum:
            found.append(
                Message.of(
                    "plan.below_minimum",
                    app=app,
                    hours=Num(total),
                    minimum=Num(cand.useful_minimum),
                )
            )
        if total > cand.requested_gpu_hours * (1 + tol) + tol:
            found.append(Message.of("plan.over_request", app=app, hours=Num(total)))
        if cand.lease is None:
            asked = {(b.gpu_type, b.period): b.gpu_hours for b in cand.batch}
            for (gpu_type, period), h in award.gpu_hours.items():
                if h > tol and h > asked.get((gpu_type, period), 0.0) * (1 + tol) + tol:
                    found.append(
                        Message.of(
                            "plan.over_request_in", app=app, gpu_type=gpu_type, period=period
                        )
                    )
        elif award.lease_gpus != round(award.lease_gpus):
            found.append(Message.of("plan.lease_whole", app=app))
    standing = problem.committed
    for cell, used in usage_by_cell(awards).items():
        cap = problem.capacity.get(cell, 0.0)
        used += standing.by_cell.get(cell, 0.0)
        if used > cap * (1 + tol) + tol:
            found.append(
                Message.of(
                    "plan.over_capacity",
                    gpu_type=cell[0],
                    period=cell[1],
                    used=Num(used),
                    capacity=Num(cap),
                )
            )
    for gpu_type, instants in lease_instants(problem).items():
        limit = problem.gpus[gpu_type]
        for t in instants:
            new = sum(
                awards[c.app_id].lease_gpus
                for c in problem.candidates
                if c.app_id in awards and c.lease is not None and c.lease.gpu_type == gpu_type
                if active_at(c, t)
            )
            held = new + standing.held_at(gpu_type, t)
            if new > 0 and held > limit:
                found.append(
                    Message.of(
                        "plan.lease_overlap",
                        gpu_type=gpu_type,
                        held=Num(held, 0),
                        limit=Num(limit, 0),
                    )
                )
                break
    achieved = shares(problem, awards)
    for rule in problem.policy.shares:
        got = achieved[rule.name]
        if (
            rule.min_share is not None
            and got + tol < rule.min_share
            and (any(a.total > tol for a in awards.values()) or standing.total > tol)
        ):
            found.append(
                Message.of(
                    "plan.below_floor",
                    name=rule.name,
                    got=_percent(got),
                    floor=_percent(rule.min_share),
                )
            )
        if rule.max_share is not None and got > rule.max_share + tol:
            found.append(
                Message.of(
                    "plan.above_ceiling",
                    name=rule.name,
                    got=_percent(got),
                    ceiling=_percent(rule.max_share),
                )
            )
    org_cap = problem.org_cap
    if org_cap is not None:
        for org, used in usage_by_org(problem, awards).items():
            if used > org_cap * (1 + tol) + tol:
                found.append(
                    Message.of("plan.over_org_cap", org=org, used=Num(used), cap=Num(org_cap))
                )
    return found


def _percent(share: float) -> Num:
    """A share as a percentage with two decimals: a break of a 30% floor by 0.004% shows."""
    return Num(share, 2, percent=True)
