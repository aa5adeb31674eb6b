"""Why the award came out as it did: binding constraints, the score cut-off, and per-application
reasons for rejections and partial awards, in words a programme manager can forward.

Reasons are derived from the plan and the problem alone (no solver internals), so the same
explanation serves the optimiser's plan, a what-if and a manual override.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gpucenter.allocation.columns import lease_cells
from gpucenter.allocation.model import Award, AwardProblem, Candidate, Cell
from gpucenter.allocation.plan import AwardPlan, shares, usage_by_cell, usage_by_org

_BINDING = 1e-3  # a constraint within 0.1% of its limit counts as binding


@dataclass(frozen=True, slots=True)
class CellUsage:
    gpu_type: str
    period: str
    used: float
    capacity: float
    binding: bool


@dataclass(frozen=True, slots=True)
class ShareOutcome:
    name: str
    share: float
    min_share: float | None
    max_share: float | None
    binding: bool


@dataclass(frozen=True, slots=True)
class Explanation:
    cells: tuple[CellUsage, ...]
    shares: tuple[ShareOutcome, ...]
    capped_organisations: tuple[str, ...]
    cutoff_score: float | None  # lowest score that got an award
    best_rejected_score: float | None
    reasons: Mapping[int, str] = field(default_factory=dict)  # rejected or partial only

    @property
    def binding(self) -> list[str]:
        """The constraints that shaped the award, one phrase each."""
        out = [f"capacity {c.gpu_type} {c.period}" for c in self.cells if c.binding]
        out += [f"share {s.name}" for s in self.shares if s.binding]
        out += [f"organisation cap {o}" for o in self.capped_organisations]
        return out


def explain(problem: AwardProblem, plan: AwardPlan) -> Explanation:
    awards = plan.awards
    used = usage_by_cell(awards, problem.committed.by_cell)
    cells = tuple(
        CellUsage(t, p, used.get((t, p), 0.0), cap, used.get((t, p), 0.0) >= cap * (1 - _BINDING))
        for (t, p), cap in sorted(problem.capacity.items())
    )
    achieved = shares(problem, awards)
    share_rows = tuple(
        ShareOutcome(
            r.name,
            achieved[r.name],
            r.min_share,
            r.max_share,
            (r.min_share is not None and achieved[r.name] <= r.min_share + _BINDING)
            or (r.max_share is not None and achieved[r.name] >= r.max_share - _BINDING),
        )
        for r in problem.policy.shares
    )
    cap = problem.org_cap
    org_used = usage_by_org(problem, awards)
    capped = tuple(
        sorted(o for o, h in org_used.items() if cap is not None and h >= cap * (1 - _BINDING))
    )
    won = [c.score for c in problem.candidates if c.app_id in awards]
    lost = [c.score for c in problem.candidates if c.app_id not in awards]
    cutoff = min(won) if won else None
    reasons: dict[int, str] = {}
    cut_by_cell = _cutoffs(problem, awards)
    for cand in problem.candidates:
        award = awards.get(cand.app_id)
        if award is None:
            reasons[cand.app_id] = _why_rejected(
                problem, cand, used, org_used, share_rows, cut_by_cell
            )
        elif award.total < cand.requested_gpu_hours * (1 - 1e-6):
            reasons[cand.app_id] = _why_partial(problem, cand, award, used, org_used, cap)
    return Explanation(cells, share_rows, capped, cutoff, max(lost) if lost else None, reasons)


def _cells_of(problem: AwardProblem, cand: Candidate) -> list[tuple[Cell, float]]:
    """Each cell the application asks for, with the GPU-hours it asks there."""
    if cand.lease is not None:
        return [(c, h * cand.lease.gpus) for c, h in lease_cells(problem, cand)]
    return [((b.gpu_type, b.period), b.gpu_hours) for b in cand.batch]


def _cutoffs(problem: AwardProblem, awards: Mapping[int, Award]) -> dict[Cell, float]:
    """Lowest score awarded anything in each cell."""
    out: dict[Cell, float] = {}
    for cand in problem.candidates:
        award = awards.get(cand.app_id)
        if award is None:
            continue
        for cell, h in award.gpu_hours.items():
            if h > 0:
                out[cell] = min(out.get(cell, cand.score), cand.score)
    return out


def _why_rejected(
    problem: AwardProblem,
    cand: Candidate,
    used: Mapping[Cell, float],
    org_used: Mapping[str, float],
    share_rows: tuple[ShareOutcome, ...],
    cutoffs: Mapping[Cell, float],
) -> str:
    policy = problem.policy
    minimum = cand.useful_minimum
    if cand.score <= 0 or cand.score < policy.min_score:
        return f"score {cand.score:.2f} is below the call's threshold {policy.min_score:.2f}"
    if minimum > cand.requested_gpu_hours:
        return "its useful minimum is larger than its request"
    cap = problem.org_cap
    if cap is not None and cap - org_used.get(cand.organisation, 0.0) < minimum:
        return (
            f"organisation {cand.organisation} already holds "
            f"{org_used.get(cand.organisation, 0.0):,.0f} of its {cap:,.0f} GPU-hour cap; "
            f"the useful minimum of {minimum:,.0f} would exceed it"
        )
    asked = _cells_of(problem, cand)
    room = sum(min(h, max(0.0, problem.capacity.get(c, 0.0) - used.get(c, 0.0))) for c, h in asked)
    full = [c for c, _ in asked if used.get(c, 0.0) >= problem.capacity.get(c, 0.0) * 0.999]
    if room < minimum:
        names = ", ".join(f"{t} {p}" for t, p in full) or "its cells"
        bars = [cutoffs[c] for c in full if c in cutoffs]
        bar = f" (awards there scored at least {min(bars):.2f})" if bars else ""
        return (
            f"capacity: {names} filled by higher-value awards{bar}; only {room:,.0f} GPU-hours "
            f"were left for it, less than its useful minimum of {minimum:,.0f}"
        )
    for row in share_rows:
        rule = next(r for r in policy.shares if r.name == row.name)
        if (
            row.binding
            and row.max_share is not None
            and cand.applicant_type in rule.applicant_types
        ):
            return f"share ceiling {row.name} ({row.max_share:.0%}) is reached"
    return (
        f"score {cand.score:.2f}: the GPU-hours it needs scored higher elsewhere "
        "(a share floor or a lease window held them for other applications)"
    )


def _why_partial(
    problem: AwardProblem,
    cand: Candidate,
    award: Award,
    used: Mapping[Cell, float],
    org_used: Mapping[str, float],
    cap: float | None,
) -> str:
    got = f"{award.total:,.0f} of {cand.requested_gpu_hours:,.0f} GPU-hours"
    if cap is not None and org_used.get(cand.organisation, 0.0) >= cap * (1 - _BINDING):
        return f"{got}: organisation {cand.organisation} reached its cap"
    short = [
        f"{t} {p}"
        for (t, p), h in _cells_of(problem, cand)
        if award.gpu_hours.get((t, p), 0.0) < h * (1 - 1e-6)
        and used.get((t, p), 0.0) >= problem.capacity.get((t, p), 0.0) * (1 - _BINDING)
    ]
    if short:
        return f"{got}: capacity ran out in {', '.join(short)}"
    return f"{got}: a share rule or lease overlap limited it"
