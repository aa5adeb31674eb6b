"""Scheduling policies the engine can drive: ours (the real core) and the baselines."""

from gpucenter.sim.policies.base import PassOutcome, SimPolicy, Workload
from gpucenter.sim.policies.fifo import FifoPolicy, LasPolicy, SlurmLikePolicy
from gpucenter.sim.policies.ours import CorePolicy

POLICY_NAMES = ("ours", "fifo", "slurm", "las")


def make_policy(name: str, *, backfill_interval_s: float = 30.0) -> SimPolicy:
    """A fresh policy by name: ours, fifo, slurm (multifactor + backfill), las (Tiresias).
    `backfill_interval_s` applies to ours (see `CorePolicy`)."""
    if name == "ours":
        return CorePolicy(backfill_interval_s=backfill_interval_s)
    if name == "fifo":
        return FifoPolicy()
    if name == "slurm":
        return SlurmLikePolicy()
    if name == "las":
        return LasPolicy()
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICY_NAMES)}")


__all__ = [
    "POLICY_NAMES",
    "CorePolicy",
    "FifoPolicy",
    "LasPolicy",
    "PassOutcome",
    "SimPolicy",
    "SlurmLikePolicy",
    "Workload",
    "make_policy",
]
