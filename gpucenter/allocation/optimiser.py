"""The award optimiser: a mixed-integer programme solved by HiGHS (through SciPy).

Maximise  sum_a score_a * H_a   where H_a = awarded GPU-hours of application a
subject to
  capacity      sum of GPU-hours used in each (GPU type, quarter) <= its pool
                (a lease uses gpus x overlap hours in every quarter its window touches)
  concurrency   leases of a type held at any lease's start <= physical GPUs of that type
  zero-or-min   m_a * y_a <= H_a <= R_a * y_a, y_a binary (no award between 0 and the minimum)
  shares        floor_G * H <= H_G <= ceiling_G * H for each share rule G
  org caps      H_org <= cap for every organisation

The formulation is deliberately compact (one column per request, one binary per application,
aggregated linking rows) so that 5,000 applications x 16 cells solve in seconds: the LP
relaxation is a fractional knapsack and only a handful of binaries end up fractional.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_matrix

from gpucenter.allocation.columns import (
    Column,
    active_at,
    build_columns,
    check_periods,
    lease_instants,
)
from gpucenter.allocation.greedy import FillState, greedy_plan
from gpucenter.allocation.model import Award, AwardProblem, Cell
from gpucenter.allocation.plan import AwardPlan, lease_award, objective, violations


class _Rows:
    """A sparse constraint matrix built row by row."""

    def __init__(self) -> None:
        self.r: list[int] = []
        self.c: list[int] = []
        self.v: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def add(self, coeffs: list[tuple[int, float]], lo: float, hi: float) -> None:
        row = len(self.lo)
        for col, val in coeffs:
            self.r.append(row)
            self.c.append(col)
            self.v.append(val)
        self.lo.append(lo)
        self.hi.append(hi)

    def constraint(self, n: int) -> LinearConstraint:
        a = coo_matrix((self.v, (self.r, self.c)), shape=(len(self.lo), n)).tocsr()
        return LinearConstraint(a, np.array(self.lo), np.array(self.hi))


@dataclass(frozen=True, slots=True)
class _Model:
    cost: np.ndarray
    constraints: LinearConstraint
    integrality: np.ndarray
    bounds: Bounds
    columns: list[list[Column]]
    col_of_app: list[list[int]]
    y0: int


def solve(
    problem: AwardProblem,
    *,
    mip_rel_gap: float = 0.01,
    time_limit_s: float = 25.0,
    keep_best_of_greedy: bool = True,
    always_branch: bool = False,
) -> AwardPlan:
    """Solve the award MILP to within `mip_rel_gap` of optimal; the plan carries the gap.

    First the LP relaxation (a bound no award can beat) and a rounding of it guided by the
    LP's amounts; when that rounding is already within the gap of the bound it is returned
    without branching, since HiGHS's own root heuristics are slow to find as good a point on
    large rounds. Otherwise HiGHS branches and cuts until the gap or `time_limit_s`. The
    best feasible plan found (rounding, HiGHS, or with `keep_best_of_greedy` the greedy
    baseline) is returned; `gap` is (bound - objective) / objective against the best bound.
    """
    check_periods(problem)
    if not problem.candidates:  # a re-offer whose reserve list ran out: nothing to decide
        return AwardPlan({}, 0.0, "milp", "optimal")
    started = time.perf_counter()
    model = _build(problem)
    relaxed = milp(
        model.cost,
        constraints=model.constraints,
        integrality=np.zeros_like(model.integrality),
        bounds=model.bounds,
        options={"time_limit": time_limit_s, "disp": False},
    )
    bound = -float(relaxed.fun) if relaxed.x is not None else float("inf")
    found: list[AwardPlan] = []
    if relaxed.x is not None:
        rounded = _round(problem, model, relaxed.x)
        if rounded:
            found.append(_plan(problem, rounded, "lp-rounding", "feasible"))
    if keep_best_of_greedy:
        base = greedy_plan(problem)
        if not violations(problem, base.awards):
            found.append(AwardPlan(base.awards, base.objective, "greedy", "feasible"))
    best = max(found, key=lambda p: p.objective, default=None)
    if always_branch or best is None or _gap(bound, best.objective) > mip_rel_gap:
        left = max(1.0, time_limit_s - (time.perf_counter() - started))
        res = milp(
            model.cost,
            constraints=model.constraints,
            integrality=model.integrality,
            bounds=model.bounds,
            options={"mip_rel_gap": mip_rel_gap, "time_limit": left, "disp": False},
        )
        dual = getattr(res, "mip_dual_bound", None)
        if dual is not None and np.isfinite(dual):
            bound = min(bound, -float(dual))
        if res.x is not None:
            status = "optimal" if res.status == 0 else str(res.message)
            plan = _plan(problem, _awards(problem, model, res.x), "milp", status)
            if best is None or plan.objective >= best.objective:
                best = plan
    seconds = time.perf_counter() - started
    if best is None:
        return AwardPlan({}, 0.0, "milp", "no feasible plan found", float("inf"), seconds)
    return AwardPlan(
        best.awards,
        best.objective,
        best.method,
        best.status,
        max(0.0, _gap(bound, best.objective)),
        seconds,
        best.notes,
    )


def _gap(bound: float, value: float) -> float:
    if not np.isfinite(bound):
        return float("inf")
    return (bound - value) / max(abs(value), 1e-9) if bound > 0 else 0.0


def _plan(problem: AwardProblem, awards: dict[int, Award], method: str, status: str) -> AwardPlan:
    return AwardPlan(awards, objective(problem, awards), method, status)


def _hours(model: _Model, x: np.ndarray, i: int) -> float:
    return float(
        sum(
            x[j] * col.gpu_hours_per_unit
            for j, col in zip(model.col_of_app[i], model.columns[i], strict=True)
        )
    )


def _dive(problem: AwardProblem, model: _Model, x: np.ndarray, rounds: int = 8) -> np.ndarray:
    """LP diving: settle applications the LP gives less than their useful minimum, re-solve.

    Each round fixes every such application either in (y=1, so the LP must give at least the
    minimum: when it already had half of it) or out (y=0), and solves the LP again, until no
    award lies strictly between zero and its minimum. Stops early if a round is infeasible.
    """
    lower = np.array(model.bounds.lb, dtype=float)
    upper = np.array(model.bounds.ub, dtype=float)
    for _ in range(rounds):
        changed = False
        for i, cand in enumerate(problem.candidates):
            y = model.y0 + i
            if upper[y] == 0 or lower[y] == 1:
                continue
            h = _hours(model, x, i)
            if h <= 1e-6 or h + 1e-6 >= cand.useful_minimum:
                continue
            changed = True
            if h >= 0.5 * cand.useful_minimum:
                lower[y] = 1.0
            else:
                upper[y] = 0.0
        if not changed:
            break
        res = milp(
            model.cost,
            constraints=model.constraints,
            integrality=np.zeros_like(model.integrality),
            bounds=Bounds(lower, upper),
            options={"disp": False},
        )
        if res.x is None:
            break
        x = res.x
    return x


def _round(problem: AwardProblem, model: _Model, x: np.ndarray) -> dict[int, Award] | None:
    """Keep what a dived LP awards (capped at its amounts), then top up greedily.

    Returns None if the result breaks a rule (a share floor can, once leftover fractional
    awards are dropped); the caller then branches.
    """
    x = _dive(problem, model, x)
    state = FillState(problem)
    cands = problem.candidates
    order = sorted(range(len(cands)), key=lambda i: (-cands[i].score, cands[i].app_id))
    for i in order:
        total = _hours(model, x, i)
        per_cell = {
            col.uses[0][0]: float(x[j]) + 1e-9
            for j, col in zip(model.col_of_app[i], model.columns[i], strict=True)
            if not col.integer
        }
        if total > 0 and total + 1e-6 >= cands[i].useful_minimum:
            state.offer(i, cands[i], total * (1 + 1e-9), False, per_cell)
    threshold = problem.policy.min_score
    for _ in range(2):
        for i in order:
            cand = cands[i]
            if cand.app_id not in state.awards and cand.score > 0 and cand.score >= threshold:
                state.offer(i, cand, float("inf"), use_ceilings=True)
    return None if violations(problem, state.awards) else dict(state.awards)


def _build(problem: AwardProblem) -> _Model:
    """The MILP's matrices (see the module docstring for the rows)."""
    cands = problem.candidates
    columns = build_columns(problem)
    flat: list[Column] = [col for cols in columns for col in cols]
    n_x = len(flat)
    n = n_x + len(cands)
    y0 = n_x  # index of the first binary
    col_of_app: list[list[int]] = []
    k = 0
    for cols in columns:
        col_of_app.append(list(range(k, k + len(cols))))
        k += len(cols)

    cost = np.zeros(n)
    lower = np.zeros(n)
    upper = np.zeros(n)
    integrality = np.zeros(n)
    threshold = problem.policy.min_score
    for j, col in enumerate(flat):
        cand = cands[col.app_index]
        cost[j] = -cand.score * col.gpu_hours_per_unit
        upper[j] = col.upper
        integrality[j] = 1 if col.integer else 0
    for i, cand in enumerate(cands):
        eligible = cand.score > 0 and cand.score >= threshold
        eligible = eligible and cand.useful_minimum <= cand.requested_gpu_hours + 1e-9
        upper[y0 + i] = 1.0 if eligible else 0.0
        integrality[y0 + i] = 1
    rows = _Rows()
    # Capacity per cell (cells absent from the pool have no room at all).
    by_cell: dict[Cell, list[tuple[int, float]]] = {}
    for j, col in enumerate(flat):
        for cell, h in col.uses:
            by_cell.setdefault(cell, []).append((j, h))
    # Standing awards (a re-offer round) hold part of each cell already.
    for cell, coeffs in by_cell.items():
        rows.add(coeffs, -np.inf, problem.room(cell))
    # Leases held at the same time (standing leases included).
    standing = problem.committed
    for gpu_type, instants in lease_instants(problem).items():
        for t in instants:
            coeffs = [
                (col_of_app[i][0], 1.0)
                for i, cand in enumerate(cands)
                if cand.lease is not None and cand.lease.gpu_type == gpu_type and active_at(cand, t)
            ]
            if coeffs:
                free = problem.gpus[gpu_type] - standing.held_at(gpu_type, t)
                rows.add(coeffs, -np.inf, float(max(0, free)))
    # Zero, or between the useful minimum and the request.
    for i, cand in enumerate(cands):
        hours = [(j, flat[j].gpu_hours_per_unit) for j in col_of_app[i]]
        rows.add([*hours, (y0 + i, -cand.requested_gpu_hours)], -np.inf, 0.0)
        if cand.useful_minimum > 0:
            rows.add([*hours, (y0 + i, -cand.useful_minimum)], 0.0, np.inf)
    # Policy shares of the awarded total; standing awards make the constant
    # bound x F - F_G (F: standing GPU-hours, F_G: those of the rule's applicant types).
    for rule in problem.policy.shares:
        inside = [cand.applicant_type in rule.applicant_types for cand in cands]
        held = sum(h for t, h in standing.by_type.items() if t in rule.applicant_types)
        for bound, sign in ((rule.min_share, 1), (rule.max_share, -1)):
            if bound is None:
                continue
            coeffs = [
                (
                    j,
                    sign
                    * ((1.0 if inside[col.app_index] else 0.0) - bound)
                    * col.gpu_hours_per_unit,
                )
                for j, col in enumerate(flat)
            ]
            rows.add(coeffs, sign * (bound * standing.total - held), np.inf)
    # Cap per organisation (less what its standing awards hold).
    cap = problem.org_cap
    if cap is not None:
        by_org: dict[str, list[tuple[int, float]]] = {}
        for j, col in enumerate(flat):
            by_org.setdefault(cands[col.app_index].organisation, []).append(
                (j, col.gpu_hours_per_unit)
            )
        for org, coeffs in by_org.items():
            left = max(0.0, cap - standing.by_org.get(org, 0.0))
            if sum(upper[j] * h for j, h in coeffs) > left:
                rows.add(coeffs, -np.inf, left)

    return _Model(
        cost,
        rows.constraint(n),
        integrality,
        Bounds(lower, upper),
        columns,
        col_of_app,
        y0,
    )


def _awards(problem: AwardProblem, model: _Model, x: np.ndarray) -> dict[int, Award]:
    """Read the solution back, rounding away solver noise (integers exactly, hours to 1e-3)."""
    awards: dict[int, Award] = {}
    for i, cand in enumerate(problem.candidates):
        col_of_app, columns = model.col_of_app, model.columns
        if x[model.y0 + i] < 0.5:
            continue
        if cand.lease is not None:
            gpus = round(float(x[col_of_app[i][0]]))
            if gpus > 0:
                awards[cand.app_id] = lease_award(problem, i, gpus)
            continue
        hours: dict[Cell, float] = {}
        for j, col in zip(col_of_app[i], columns[i], strict=True):
            h = round(min(float(x[j]), col.upper), 3)
            if h > 0:
                hours[col.uses[0][0]] = h
        if hours:
            awards[cand.app_id] = Award(cand.app_id, hours)
    return awards
