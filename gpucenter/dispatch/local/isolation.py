"""How the local dispatcher isolates the jobs it starts: decided by the wiring, not here.

`LocalIsolation` is everything the dispatcher needs to know about tenants without reading
gpucenter's database: whether it may start jobs now and how (`mode`, asked again before
every start, because a site can gain a second organisation while it runs), the sandbox's
settings, where Unix identities come from (`accounts`, multi-tenant only), and where job,
home and project directories live.

A dispatcher built without one (tests, embedded use) runs every job as the server's own user,
unsandboxed, in an explicit single-user mode (`unsandboxed`): who builds a dispatcher by hand
decides for themselves. The server never does that: `gpucenter.services.sites.isolation`
builds the real one from the settings and applies the mode rule (`decide_mode`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from gpucenter.dispatch.isolation.mode import ModeDecision, RunMode, decide_mode
from gpucenter.dispatch.isolation.sandbox import SandboxPolicy
from gpucenter.dispatch.isolation.unix_accounts import AccountPolicy

__all__ = ["LocalIsolation", "single_user_decision"]


def single_user_decision(*, sandboxed: bool, why: str = "") -> ModeDecision:
    """An explicit single-user decision (the server's own user runs every job), for a
    dispatcher whose builder vouches that there is one tenant: tests, a laptop."""
    problem = None if sandboxed else (why or "not requested by whoever built this dispatcher")
    decision = decide_mode(
        euid=os.geteuid(), setting="single_user", organisations=1, sandbox_problem=problem
    )
    assert decision.mode is RunMode.SINGLE_USER
    return decision


@dataclass(frozen=True, slots=True)
class LocalIsolation:
    """The local site's isolation settings, as the dispatcher uses them."""

    mode: Callable[[], ModeDecision]
    """Whether jobs may start now and how; cheap (the wiring caches what it counts)."""
    sandbox: SandboxPolicy = field(default_factory=SandboxPolicy)
    accounts: AccountPolicy | None = None
    """Where job owners' accounts are (multi-tenant); homes are ``accounts.home_root``."""
    jobs_root: Path | None = None
    """Per-job directories (output files, default working directory); root's, 0755, never
    world-writable. None: the dispatcher's own directory."""
    projects_root: Path | None = None
    """Each project's shared space, ``<projects_root>/<project group>`` (root:group, 2770),
    read-write for the project's jobs (multi-tenant)."""
    device_nodes: frozenset[str] = frozenset()
    """Nodes whose GPUs are real devices: their ``/dev/nvidia<minor>`` files are bound into
    the sandbox of a job placed there (virtual GPUs have none)."""
    gpu_minors: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    """Physical GPU index -> device minor (NVML's minor number); the index where absent."""

    @classmethod
    def unsandboxed(cls, jobs_root: Path | None = None) -> LocalIsolation:
        """Single-user, without a sandbox: what a dispatcher built by hand gets."""
        decision = single_user_decision(sandboxed=False)
        return cls(mode=lambda: decision, jobs_root=jobs_root)

    @classmethod
    def fixed(cls, decision: ModeDecision, **options: object) -> LocalIsolation:
        """One decision for the dispatcher's whole life (tests of each mode)."""
        return cls(mode=lambda: decision, **options)  # type: ignore[arg-type]

    def log_decision(self, logger: logging.Logger) -> ModeDecision:
        """Say the current decision at its level (at start: loudly)."""
        decision = self.mode()
        logger.log(decision.level, "job isolation: %s", decision.message)
        return decision
