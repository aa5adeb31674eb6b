"""Scheduling policies the engine can drive: ours (the real core) and the baselines."""

from gpucenter.sim.policies.base import PassOutcome, SimPolicy, Workload
from gpucenter.sim.policies.fifo import FifoPolicy, LasPolicy, SlurmLikePolicy
from gpucenter.sim.policies.ours import CorePolicy

POLICY_NAMES = ("ours", "fifo", "slurm", "las")


def make_policy(name: str) -> SimPolicy:
    """A fresh policy by name: ours, fifo, slurm (multifactor + backfill), las (Tiresias)."""
    if name == "ours":
        return CorePolicy()
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
