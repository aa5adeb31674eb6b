"""Why the award came out as it did: binding constraints, the score cut-off, and per-application
reasons for rejections and partial awards, in words a programme manager can forward: as
messages (`award.*`), so that each reader gets them in their own language.

Reasons are derived from the plan and the problem alone (no solver internals), so the same
explanation serves the optimiser's plan, a what-if and a manual override.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gpucenter.allocation.columns import lease_cells
from gpucenter.allocation.model import Award, AwardProblem, Candidate, Cell
from gpucenter.allocation.plan import AwardPlan, shares, usage_by_cell, usage_by_org
from gpucenter.domain.messages import Message, Num

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
    why: Mapping[int, Message] = field(default_factory=dict)  # rejected or partial only

    @property
    def reasons(self) -> dict[int, str]:
        """`why` in English (the API's and the CLI's words; pages render `why`)."""
        return {a: m.english() for a, m in self.why.items()}

    @property
    def binding_messages(self) -> list[Message]:
        """The constraints that shaped the award, one phrase each."""
        out = [
            Message.of("award.binding_capacity", gpu_type=c.gpu_type, period=c.period)
            for c in self.cells
            if c.binding
        ]
        out += [Message.of("award.binding_share", name=s.name) for s in self.shares if s.binding]
        out += [Message.of("award.binding_org", org=o) for o in self.capped_organisations]
        return out

    @property
    def binding(self) -> list[str]:
        """`binding_messages` in English."""
        return [m.english() for m in self.binding_messages]


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
    reasons: dict[int, Message] = {}
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
) -> Message:
    policy = problem.policy
    minimum = cand.useful_minimum
    if cand.score <= 0 or cand.score < policy.min_score:
        return Message.of(
            "award.below_threshold",
            score=Num(cand.score, 2),
            threshold=Num(policy.min_score, 2),
        )
    if minimum > cand.requested_gpu_hours:
        return Message.of("award.minimum_over_request")
    cap = problem.org_cap
    if cap is not None and cap - org_used.get(cand.organisation, 0.0) < minimum:
        return Message.of(
            "award.org_cap",
            org=cand.organisation,
            held=Num(org_used.get(cand.organisation, 0.0), 0),
            cap=Num(cap, 0),
            minimum=Num(minimum, 0),
        )
    asked = _cells_of(problem, cand)
    room = sum(min(h, max(0.0, problem.capacity.get(c, 0.0) - used.get(c, 0.0))) for c, h in asked)
    full = [c for c, _ in asked if used.get(c, 0.0) >= problem.capacity.get(c, 0.0) * 0.999]
    if room < minimum:
        names = ", ".join(f"{t} {p}" for t, p in full)
        cells: str | Message = names or Message.of("plan.its_cells")
        bars = [cutoffs[c] for c in full if c in cutoffs]
        if bars:
            return Message.of(
                "award.capacity_bar",
                cells=cells,
                bar=Num(min(bars), 2),
                room=Num(room, 0),
                minimum=Num(minimum, 0),
            )
        return Message.of("award.capacity", cells=cells, room=Num(room, 0), minimum=Num(minimum, 0))
    for row in share_rows:
        rule = next(r for r in policy.shares if r.name == row.name)
        if (
            row.binding
            and row.max_share is not None
            and cand.applicant_type in rule.applicant_types
        ):
            return Message.of(
                "award.share_ceiling", share=row.name, percent=Num(row.max_share, 0, percent=True)
            )
    return Message.of("award.outscored", score=Num(cand.score, 2))


def _why_partial(
    problem: AwardProblem,
    cand: Candidate,
    award: Award,
    used: Mapping[Cell, float],
    org_used: Mapping[str, float],
    cap: float | None,
) -> Message:
    got, asked = Num(award.total, 0), Num(cand.requested_gpu_hours, 0)
    if cap is not None and org_used.get(cand.organisation, 0.0) >= cap * (1 - _BINDING):
        return Message.of("award.partial_cap", got=got, asked=asked, org=cand.organisation)
    short = [
        f"{t} {p}"
        for (t, p), h in _cells_of(problem, cand)
        if award.gpu_hours.get((t, p), 0.0) < h * (1 - 1e-6)
        and used.get((t, p), 0.0) >= problem.capacity.get((t, p), 0.0) * (1 - _BINDING)
    ]
    if short:
        return Message.of("award.partial_capacity", got=got, asked=asked, cells=", ".join(short))
    return Message.of("award.partial_other", got=got, asked=asked)
