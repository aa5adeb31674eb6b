"""The greedy baseline: what a committee does by hand, in score order.

Walk applications from the highest score down; give each its request if it fits, else the
largest amount that still fits and is at least its useful minimum, else nothing. Capacity,
concurrent leases, organisation caps and share ceilings are respected as it goes. Share
floors cannot be checked one award at a time, so a first pass serves each floor's group (in
score order) up to floor x total capacity; since the total awarded never exceeds capacity,
the floors then hold at the end; where a group could not reach its floor that way, the
lowest-scoring awards outside it are dropped until the floor holds (`repair_floors`).
The optimiser must score at least as well as this.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from math import floor

from gpucenter.allocation.columns import active_at, lease_cells, lease_instants
from gpucenter.allocation.model import (
    ApplicantType,
    Award,
    AwardProblem,
    Candidate,
    Cell,
    ShareRule,
)
from gpucenter.allocation.plan import AwardPlan, lease_award, objective

_EPS = 1e-9


class FillState:
    """Room left and totals so far while awards are handed out one at a time."""

    def __init__(self, problem: AwardProblem) -> None:
        self.problem = problem
        standing = problem.committed
        self.room: dict[Cell, float] = {cell: problem.room(cell) for cell in problem.capacity}
        self.org_used: dict[str, float] = defaultdict(float, standing.by_org)
        self.type_used: dict[ApplicantType, float] = defaultdict(float, standing.by_type)
        self.total = standing.total
        self.awards: dict[int, Award] = {}
        self.instants = lease_instants(problem)
        self.held: dict[tuple[str, float], int] = defaultdict(int)
        for gpu_type, instants in self.instants.items():
            for t in instants:
                self.held[(gpu_type, t)] = standing.held_at(gpu_type, t)

    def limit(self, cand: Candidate, use_ceilings: bool) -> float:
        """GPU-hours this candidate may still take under the org cap and share ceilings."""
        limit = float("inf")
        cap = self.problem.org_cap
        if cap is not None:
            limit = min(limit, cap - self.org_used[cand.organisation])
        if use_ceilings:
            for rule in self.problem.policy.shares:
                if rule.max_share is None or cand.applicant_type not in rule.applicant_types:
                    continue
                part = sum(self.type_used[t] for t in rule.applicant_types)
                if rule.max_share >= 1:
                    continue
                # part + x <= max * (total + x)  <=>  x <= (max*total - part) / (1 - max)
                limit = min(limit, (rule.max_share * self.total - part) / (1 - rule.max_share))
        return max(0.0, limit)

    def offer(
        self,
        index: int,
        cand: Candidate,
        budget: float,
        use_ceilings: bool,
        per_cell: Mapping[Cell, float] | None = None,
    ) -> bool:
        """Award as much as fits (up to `budget` GPU-hours, and `per_cell` in each cell).

        Returns False, awarding nothing, when what fits is below the useful minimum.
        """
        limit = min(budget, self.limit(cand, use_ceilings))
        if cand.lease is not None:
            award = self._lease(index, cand, limit)
        else:
            award = self._batch(cand, limit, per_cell)
        if award is None or award.total + _EPS < cand.useful_minimum or award.total <= 0:
            return False
        self._take(cand, award)
        return True

    def _batch(
        self, cand: Candidate, limit: float, per_cell: Mapping[Cell, float] | None
    ) -> Award | None:
        fit: dict[Cell, float] = {}
        for b in cand.batch:
            cell = (b.gpu_type, b.period)
            want = b.gpu_hours if per_cell is None else min(b.gpu_hours, per_cell.get(cell, 0.0))
            fit[cell] = min(want, max(0.0, self.room.get(cell, 0.0)))
        total = sum(fit.values())
        if total <= 0:
            return None
        if total > limit:
            scale = limit / total
            fit = {c: h * scale for c, h in fit.items()}
        return Award(cand.app_id, {c: h for c, h in fit.items() if h > 0})

    def _lease(self, index: int, cand: Candidate, limit: float) -> Award | None:
        lease = cand.lease
        assert lease is not None
        gpus = lease.gpus
        for cell, h in lease_cells(self.problem, cand):
            gpus = min(gpus, floor(self.room.get(cell, 0.0) / h + _EPS))
        if limit < float("inf"):  # no org cap nor ceiling: floor(inf) would raise
            gpus = min(gpus, floor(limit / lease.hours + _EPS))
        physical = self.problem.gpus.get(lease.gpu_type)
        if physical is not None:
            for t in self.instants.get(lease.gpu_type, []):
                if active_at(cand, t):
                    gpus = min(gpus, physical - self.held[(lease.gpu_type, t)])
        if gpus < lease.min_gpus:
            return None
        return lease_award(self.problem, index, gpus)

    def _take(self, cand: Candidate, award: Award, sign: int = 1) -> None:
        for cell, h in award.gpu_hours.items():
            self.room[cell] = self.room.get(cell, 0.0) - sign * h
        if cand.lease is not None:
            for t in self.instants.get(cand.lease.gpu_type, []):
                if active_at(cand, t):
                    self.held[(cand.lease.gpu_type, t)] += sign * award.lease_gpus
        self.org_used[cand.organisation] += sign * award.total
        self.type_used[cand.applicant_type] += sign * award.total
        self.total += sign * award.total
        if sign > 0:
            self.awards[cand.app_id] = award
        else:
            del self.awards[cand.app_id]

    def remove(self, cand: Candidate) -> None:
        self._take(cand, self.awards[cand.app_id], -1)

    def share_of(self, rule: ShareRule) -> float:
        part = sum(self.type_used[t] for t in rule.applicant_types)
        return part / self.total if self.total > 0 else 1.0

    def repair_floors(self, order: list[int]) -> None:
        """Where a floor still fails, drop the lowest-scoring awards outside its group and
        offer the freed room to the group, until the floor holds or nothing is left to drop."""
        cands = self.problem.candidates
        for rule in self.problem.policy.shares:
            if not rule.min_share:
                continue
            outside = [
                i
                for i in reversed(order)
                if cands[i].app_id in self.awards
                and cands[i].applicant_type not in rule.applicant_types
            ]
            while self.share_of(rule) < rule.min_share and outside:
                self.remove(cands[outside.pop(0)])
                for i in order:
                    c = cands[i]
                    if c.applicant_type in rule.applicant_types and c.app_id not in self.awards:
                        self.offer(i, c, float("inf"), use_ceilings=False)


def greedy_plan(problem: AwardProblem) -> AwardPlan:
    """Score-order baseline on the same input as the optimiser."""
    started = time.perf_counter()
    threshold = problem.policy.min_score
    order = sorted(
        (i for i, c in enumerate(problem.candidates) if c.score > 0 and c.score >= threshold),
        key=lambda i: (-problem.candidates[i].score, problem.candidates[i].app_id),
    )
    state = FillState(problem)
    for rule in problem.policy.shares:
        if not rule.min_share:
            continue
        target = rule.min_share * problem.total_capacity
        for i in order:
            cand = problem.candidates[i]
            got = sum(state.type_used[t] for t in rule.applicant_types)
            if got >= target:
                break
            if cand.applicant_type in rule.applicant_types and cand.app_id not in state.awards:
                state.offer(i, cand, float("inf"), use_ceilings=False)
    # Twice: a share ceiling measured against a still-small total may turn an application
    # away early that fits once the rest is handed out.
    for _ in range(2):
        for i in order:
            cand = problem.candidates[i]
            if cand.app_id not in state.awards:
                state.offer(i, cand, float("inf"), use_ceilings=True)
    state.repair_floors(order)
    awards = dict(state.awards)
    return AwardPlan(
        awards,
        objective(problem, awards),
        "greedy",
        status="heuristic",
        seconds=time.perf_counter() - started,
    )
