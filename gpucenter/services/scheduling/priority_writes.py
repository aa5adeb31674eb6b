"""Which pending jobs' stored priorities a scheduling pass rewrites, and with what."""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from typing import Any

from gpucenter.core.model import PriorityBreakdown
from gpucenter.domain.ids import JobId

# Stored priorities are what `job show`, `sprio`-like listings and the portal display; the
# pass orders by priorities it computes afresh, so a stored one a little behind changes no
# decision. Fair-share factors move with every start and every charge, and then every
# pending job of a project moves together: rewriting them all made a pass's cost grow with
# the queue (under issue 18's storm of submissions every pass updated every pending row,
# 8,000 and growing, and passes slowed to one in 3 s). Slurm's multifactor plugin likewise
# recomputes pending jobs' priorities on a period (`PriorityCalcPeriod`, 5 minutes by
# default), not at every scheduling event. A pass writes every new job's priority, and at
# most this many moved ones, the most moved first, so the stored figures catch up within a
# few passes of a change and each pass's writes stay bounded.
MAX_PRIORITY_REWRITES = 250


def _priority_shift(old: float | None, new: float) -> float:
    """How far a stored priority is from the pass's: 0.0 within 1% (ages creep up every pass;
    not worth a write), else the relative move (infinite for a job with none stored yet)."""
    if old is None:
        return math.inf
    moved = abs(new - old)
    if moved <= max(1e-6, 0.01 * abs(old)):
        return 0.0
    return moved / max(abs(old), 1e-6)


def priority_writes(
    priorities: Mapping[JobId, PriorityBreakdown], stored: Mapping[int, float | None]
) -> dict[int, dict[str, Any]]:
    """The priority columns to write this pass: all new jobs', then the most moved others'."""
    writes: dict[int, dict[str, Any]] = {}
    moved: list[tuple[float, JobId]] = []
    for job_id, breakdown in priorities.items():
        shift = _priority_shift(stored[int(job_id)], round(breakdown.total, 6))
        if shift == math.inf:
            writes[int(job_id)] = _priority_columns(breakdown)
        elif shift > 0.0:
            moved.append((shift, job_id))
    for _, job_id in heapq.nlargest(MAX_PRIORITY_REWRITES, moved):
        writes[int(job_id)] = _priority_columns(priorities[job_id])
    return writes


def _priority_columns(breakdown: PriorityBreakdown) -> dict[str, Any]:
    factors = {k: round(v, 6) for k, v in breakdown.as_row().items()}
    return {"priority": factors["priority"], "priority_factors": factors}
