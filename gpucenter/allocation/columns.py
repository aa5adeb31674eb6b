"""Candidates flattened into decision columns: what one unit of each variable consumes.

A GPU-hours request is one continuous column (unit: a GPU-hour in its cell). A lease is one
integer column (unit: one GPU for the whole window), consuming its overlap hours in every
quarter it touches. The optimiser, the greedy baseline and the feasibility check all read
the same columns, so they cannot disagree about what an award costs.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpucenter.allocation.model import AwardProblem, Candidate, Cell, overlap_hours, quarter_bounds


@dataclass(frozen=True, slots=True)
class Column:
    app_index: int
    upper: float  # most units that may be awarded
    integer: bool
    gpu_hours_per_unit: float
    uses: tuple[tuple[Cell, float], ...]  # GPU-hours of each cell per unit


def lease_cells(problem: AwardProblem, cand: Candidate) -> tuple[tuple[Cell, float], ...]:
    """Cells a lease overlaps, with hours per GPU; a cell missing from capacity gets 0 room."""
    assert cand.lease is not None
    lease = cand.lease
    periods = sorted({p for (_, p) in problem.capacity})
    uses: list[tuple[Cell, float]] = []
    covered = 0.0
    for p in periods:
        h = overlap_hours(lease.start, lease.end, p)
        if h > 0:
            uses.append(((lease.gpu_type, p), h))
            covered += h
    if covered + 1e-6 < lease.hours:
        # Part of the window lies outside every quarter of the call: it can never fit.
        uses.append(((lease.gpu_type, "outside"), lease.hours - covered))
    return tuple(uses)


def build_columns(problem: AwardProblem) -> list[list[Column]]:
    """Columns per candidate, in candidate order."""
    out: list[list[Column]] = []
    for i, cand in enumerate(problem.candidates):
        if cand.lease is not None:
            out.append(
                [
                    Column(
                        i,
                        float(cand.lease.gpus),
                        True,
                        cand.lease.hours,
                        lease_cells(problem, cand),
                    )
                ]
            )
        else:
            out.append(
                [
                    Column(i, b.gpu_hours, False, 1.0, (((b.gpu_type, b.period), 1.0),))
                    for b in cand.batch
                ]
            )
    return out


def lease_instants(problem: AwardProblem) -> dict[str, list[float]]:
    """Per GPU type, the lease start times (epoch s): concurrent use peaks at one of them.

    Standing leases (`problem.committed`) start at instants of their own, which count for
    the types some candidate leases."""
    found: dict[str, set[float]] = {}
    for cand in problem.candidates:
        if cand.lease is not None and cand.lease.gpu_type in problem.gpus:
            found.setdefault(cand.lease.gpu_type, set()).add(cand.lease.start.timestamp())
    for gpu_type, start, _, _ in problem.committed.leases:
        if gpu_type in found:
            found[gpu_type].add(start)
    return {t: sorted(v) for t, v in found.items()}


def active_at(cand: Candidate, instant: float) -> bool:
    lease = cand.lease
    return lease is not None and lease.start.timestamp() <= instant < lease.end.timestamp()


def check_periods(problem: AwardProblem) -> None:
    """Every capacity cell names a real quarter (raises ValidationError otherwise)."""
    for _, period in problem.capacity:
        quarter_bounds(period)
