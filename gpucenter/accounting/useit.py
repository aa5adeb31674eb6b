"""Use it or lose it: is an award being used as planned?

The real programmes check monthly and reclaim GPUs that sit idle. The plan is pro rata: an
allocation of H GPU-hours over [start, end) should have used H x elapsed/duration by now; a
lease of N GPUs should have kept N GPUs busy for the elapsed time. An award is flagged when
its use falls below `min_ratio` of that plan once a grace period has passed (nobody is
flagged in the first week for not having started yet), or when the GPUs it did run on were
mostly idle where the dispatcher could measure utilisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

DEFAULT_MIN_RATIO = 0.5
DEFAULT_MIN_UTILISATION_PCT = 30.0
DEFAULT_GRACE = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class UsePlan:
    """One award to assess: an allocation (kind 'allocation') or a lease (kind 'lease')."""

    kind: str
    id: int
    project_id: int
    planned_total_gpu_seconds: float
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True, slots=True)
class UseAssessment:
    kind: str
    id: int
    project_id: int
    planned_gpu_hours: float
    used_gpu_hours: float
    ratio: float
    mean_utilisation_pct: float | None
    flagged: bool
    reason: str
    reclaimable_gpu_hours: float


def pro_rata(plan: UsePlan, at: datetime) -> float:
    """GPU-seconds the plan expected to be used by `at`."""
    total = (plan.ends_at - plan.starts_at).total_seconds()
    if total <= 0:
        return plan.planned_total_gpu_seconds
    elapsed = min(max((at - plan.starts_at).total_seconds(), 0.0), total)
    return plan.planned_total_gpu_seconds * elapsed / total


def assess(
    plan: UsePlan,
    used_gpu_seconds: float,
    at: datetime,
    mean_utilisation_pct: float | None = None,
    *,
    min_ratio: float = DEFAULT_MIN_RATIO,
    min_utilisation_pct: float = DEFAULT_MIN_UTILISATION_PCT,
    grace: timedelta = DEFAULT_GRACE,
) -> UseAssessment:
    """Compare use with the pro-rata plan; say why an award is flagged.

    Reclaimable is what the award cannot use at its current pace before it ends: the
    unused remainder minus what the recent ratio would still consume.
    """
    expected = pro_rata(plan, at)
    ratio = used_gpu_seconds / expected if expected > 0 else 1.0
    in_grace = at - plan.starts_at < grace or at >= plan.ends_at
    reasons: list[str] = []
    if not in_grace and ratio < min_ratio:
        reasons.append(f"used {ratio:.0%} of the pro-rata plan (threshold {min_ratio:.0%})")
    if (
        not in_grace
        and mean_utilisation_pct is not None
        and mean_utilisation_pct < min_utilisation_pct
    ):
        reasons.append(
            f"GPUs were {mean_utilisation_pct:.0f}% utilised on average "
            f"(threshold {min_utilisation_pct:.0f}%)"
        )
    remaining_plan = max(plan.planned_total_gpu_seconds - used_gpu_seconds, 0.0)
    future_plan = max(plan.planned_total_gpu_seconds - expected, 0.0)
    reclaimable = max(remaining_plan - future_plan * min(ratio, 1.0), 0.0) if reasons else 0.0
    return UseAssessment(
        kind=plan.kind,
        id=plan.id,
        project_id=plan.project_id,
        planned_gpu_hours=expected / 3600.0,
        used_gpu_hours=used_gpu_seconds / 3600.0,
        ratio=ratio,
        mean_utilisation_pct=mean_utilisation_pct,
        flagged=bool(reasons),
        reason="; ".join(reasons),
        reclaimable_gpu_hours=reclaimable / 3600.0,
    )
