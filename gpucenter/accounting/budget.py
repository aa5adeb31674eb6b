"""Budget rules: burn-down, projected exhaustion, which alert thresholds a usage crosses,
and what a programme does at 100%. Pure functions; the service stores what they decide."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

# Alerts go out at half, four fifths and all of the budget; each once per allocation.
THRESHOLDS: tuple[int, ...] = (50, 80, 100)


class Enforcement(StrEnum):
    """What happens when an allocation has used its whole budget, per programme.

    HOLD: the allocation is marked exhausted; its jobs wait (the scheduler's budget check).
    OPPORTUNISTIC: marked exhausted too, and its pending jobs are moved to the opportunistic
    QoS, so they may still run on idle GPUs but are the first to be preempted.
    """

    HOLD = "hold"
    OPPORTUNISTIC = "opportunistic"


DEFAULT_ENFORCEMENT = Enforcement.HOLD


def used_fraction(used_gpu_seconds: float, budget_gpu_seconds: float) -> float:
    if budget_gpu_seconds <= 0:
        return 1.0
    return max(0.0, used_gpu_seconds) / budget_gpu_seconds


def newly_crossed(fraction: float, already: Collection[int]) -> list[int]:
    """Thresholds reached by `fraction` that have not been raised yet, lowest first.

    A jump from 40% to 105% raises 50, 80 and 100 together: nobody should miss the 80% mail
    because one long job ended in a single step.
    """
    pct = fraction * 100.0
    return [t for t in THRESHOLDS if pct >= t - 1e-9 and t not in already]


@dataclass(frozen=True, slots=True)
class BurnDown:
    """An allocation's budget over time: used, left, rate and when it runs out."""

    budget_gpu_hours: float
    used_gpu_hours: float
    burn_rate_gpu_hours_per_day: float
    projected_exhaustion: datetime | None

    @property
    def remaining_gpu_hours(self) -> float:
        return self.budget_gpu_hours - self.used_gpu_hours

    @property
    def used_fraction(self) -> float:
        return used_fraction(self.used_gpu_hours, self.budget_gpu_hours)


def project_exhaustion(
    remaining_gpu_hours: float, rate_per_day: float, now: datetime, ends_at: datetime
) -> datetime | None:
    """When the budget runs out at `rate_per_day`; None if the allocation ends first."""
    if remaining_gpu_hours <= 0:
        return now
    if rate_per_day <= 0:
        return None
    days = remaining_gpu_hours / rate_per_day
    if days > 365_000 or now + timedelta(days=days) >= ends_at:
        return None
    return now + timedelta(days=days)


def burn_down(
    budget_gpu_seconds: float,
    used_gpu_seconds: float,
    used_in_window_gpu_seconds: float,
    window: timedelta,
    now: datetime,
    ends_at: datetime,
) -> BurnDown:
    """The burn-down at `now`, projecting the rate of the last `window` forward."""
    rate = used_in_window_gpu_seconds / 3600.0 / (window.total_seconds() / 86400.0)
    budget_h, used_h = budget_gpu_seconds / 3600.0, used_gpu_seconds / 3600.0
    return BurnDown(
        budget_h, used_h, rate, project_exhaustion(budget_h - used_h, rate, now, ends_at)
    )
