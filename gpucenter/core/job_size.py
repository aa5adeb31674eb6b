"""Job-size factors, in a module of their own because both the queue (which caches each
job's constant part of its priority) and the priority breakdown use them, and the queue must
not import the priority module (which names the queue's types)."""

from __future__ import annotations

import math


def size_factor(total_gpus: int, cluster_gpus: int) -> float:
    """Log-scaled job size in [0, 1]: sizes span 1 to thousands, so linear would be ~0."""
    if cluster_gpus <= 1:
        return 1.0
    return min(1.0, math.log1p(total_gpus) / math.log1p(cluster_gpus))


def small_factor(total_gpus: int, limit_s: float, cluster_gpus: int, max_age_s: float) -> float:
    """Slurm's PriorityFavorSmall relative to time, log-scaled into [0, 1]: 1 for the least
    requested work (GPUs x time limit), 0 at the cluster's GPUs for `max_age_s` or more."""
    top = math.log1p(max(1, cluster_gpus) * max_age_s)
    return max(0.0, 1.0 - math.log1p(total_gpus * limit_s) / top)


__all__ = ["size_factor", "small_factor"]
