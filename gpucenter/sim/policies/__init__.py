"""Scheduling policies the engine can drive: ours (the real core) and the baselines.

Baselines, each in its own module: `fifo` (strict FIFO), `easy` (FIFO + one reservation +
backfill, Slurm's backfill at reservation depth 1), `las` (Tiresias' discretised 2D-LAS,
preemptive), `slurm` (Slurm-like multifactor priority + backfill). `ours` (also called
`default`) is the core with the default policy of `default.py`.
"""

from gpucenter.sim.policies.base import PassOutcome, SimPolicy, Workload
from gpucenter.sim.policies.default import FAIR_SHARE_PERIOD_S, default_policies
from gpucenter.sim.policies.easy import EasyPolicy
from gpucenter.sim.policies.fifo import FifoPolicy
from gpucenter.sim.policies.las import LasPolicy
from gpucenter.sim.policies.ours import CorePolicy
from gpucenter.sim.policies.slurm import SlurmLikePolicy

POLICY_NAMES = ("ours", "fifo", "easy", "las", "slurm")


def make_policy(name: str, *, backfill_interval_s: float | None = None) -> SimPolicy:
    """A fresh policy by name (see the module docstring). `backfill_interval_s` applies
    to ours (see `CorePolicy`; None: the policy's own, which the server uses too)."""
    if name in ("ours", "default"):
        return CorePolicy(
            default_policies(),
            fair_share_period_s=FAIR_SHARE_PERIOD_S,
            backfill_interval_s=backfill_interval_s,
        )
    if name == "fifo":
        return FifoPolicy()
    if name == "easy":
        return EasyPolicy()
    if name == "slurm":
        return SlurmLikePolicy()
    if name == "las":
        return LasPolicy()
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICY_NAMES)}")


__all__ = [
    "POLICY_NAMES",
    "CorePolicy",
    "EasyPolicy",
    "FifoPolicy",
    "LasPolicy",
    "PassOutcome",
    "SimPolicy",
    "SlurmLikePolicy",
    "Workload",
    "default_policies",
    "make_policy",
]
