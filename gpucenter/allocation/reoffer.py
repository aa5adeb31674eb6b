"""Re-offering freed capacity down a call's reserve list, under the call's shares and caps.

Capacity comes back when an offer is declined or lapses and when idle GPU-hours are
reclaimed. The standing awards are kept as they are (`Committed`): they use their cells,
count towards their organisation's cap and weigh in every share, and the optimiser fits
awards for the reserve applicants around them, exactly as in the first round.

One honest limit: a decline or reclaim can itself push a share out of bounds (a startup
declines and the startups' floor is missed). If the reserve list cannot repair that, no
re-award can; the round then keeps that share where it is or moves it towards its bound,
never further away (`relaxed_policy`), and says so in its notes, so that the manager sees
the departure before approving.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from gpucenter.allocation.model import (
    ApplicantType,
    Award,
    AwardPolicy,
    AwardProblem,
    Candidate,
    Cell,
    Committed,
    quarter_bounds,
)

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Standing:
    """A standing award: the application it was made to and what it holds now (after any
    reclaim or supplement), in GPU-hours by cell and, for a lease, GPUs."""

    candidate: Candidate
    award: Award


def committed_of(standing: Sequence[Standing]) -> Committed:
    """What the standing awards hold, by cell, organisation and applicant type."""
    by_cell: dict[Cell, float] = defaultdict(float)
    by_org: dict[str, float] = defaultdict(float)
    by_type: dict[ApplicantType, float] = defaultdict(float)
    leases: list[tuple[str, float, float, int]] = []
    for item in standing:
        cand, award = item.candidate, item.award
        for cell, h in award.gpu_hours.items():
            by_cell[cell] += h
        by_org[cand.organisation] += award.total
        by_type[cand.applicant_type] += award.total
        if cand.lease is not None and award.lease_gpus > 0:
            lease = cand.lease
            leases.append(
                (lease.gpu_type, lease.start.timestamp(), lease.end.timestamp(), award.lease_gpus)
            )
    return Committed(dict(by_cell), dict(by_org), dict(by_type), tuple(leases))


def relaxed_policy(policy: AwardPolicy, committed: Committed) -> tuple[AwardPolicy, list[str]]:
    """The call's policy, with each share bound the standing awards already miss moved to
    where they stand (a re-award may then only keep or improve that share)."""
    total = committed.total
    notes: list[str] = []
    rules = []
    for rule in policy.shares:
        low, high = rule.min_share, rule.max_share
        if total > _EPS:
            held = sum(h for t, h in committed.by_type.items() if t in rule.applicant_types)
            share = held / total
            if low is not None and share < low - _EPS:
                notes.append(
                    f"share {rule.name} stands at {share:.1%}, below its floor {low:.0%}: "
                    "the re-award may only raise it"
                )
                low = share
            if high is not None and share > high + _EPS:
                notes.append(
                    f"share {rule.name} stands at {share:.1%}, above its ceiling {high:.0%}: "
                    "the re-award may only lower it"
                )
                high = share
        rules.append(replace(rule, min_share=low, max_share=high))
    return replace(policy, shares=tuple(rules)), notes


def still_offerable(cand: Candidate, now: datetime) -> Candidate | None:
    """The part of a reserve application that can still be awarded at `now`: quarters that
    have not ended (a lease only if its window has not begun); None if nothing is left."""
    if cand.lease is not None:
        return cand if cand.lease.start > now else None
    left = tuple(b for b in cand.batch if quarter_bounds(b.period)[1] > now)
    if not left:
        return None
    return cand if len(left) == len(cand.batch) else replace(cand, batch=left)


@dataclass(frozen=True, slots=True)
class ReofferRound:
    """The round to solve, and what the manager must be told about it."""

    problem: AwardProblem
    notes: tuple[str, ...]


def reoffer_round(
    capacity: dict[Cell, float],
    policy: AwardPolicy,
    gpus: dict[str, int],
    standing: Sequence[Standing],
    reserve: Sequence[Candidate],
    now: datetime,
) -> ReofferRound:
    """Freed capacity as an award problem over the reserve list: the call's full capacity
    and caps, the standing awards as constants, the reserve applications as candidates."""
    committed = committed_of(standing)
    rules, notes = relaxed_policy(policy, committed)
    candidates = tuple(c for c in (still_offerable(c, now) for c in reserve) if c is not None)
    problem = AwardProblem(capacity, candidates, rules, gpus, committed)
    return ReofferRound(problem, tuple(notes))


def freed_by_cell(problem: AwardProblem) -> dict[Cell, float]:
    """GPU-hours of each cell not held by a standing award: what can be re-offered."""
    return {cell: problem.room(cell) for cell in problem.capacity if problem.room(cell) > _EPS}


__all__ = [
    "ReofferRound",
    "Standing",
    "committed_of",
    "freed_by_cell",
    "relaxed_policy",
    "reoffer_round",
    "still_offerable",
]
