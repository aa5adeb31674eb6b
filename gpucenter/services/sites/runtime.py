"""One site as the scheduler loop drives it: its nodes, its dispatcher and its health."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpucenter.dispatch.base import Dispatcher
from gpucenter.services.sites.config import LoadedSite
from gpucenter.services.sites.health import SiteHealth

if TYPE_CHECKING:
    from gpucenter.services.sites.slurm_settings import SlurmSettings


@dataclass
class SiteRuntime:
    """One site as the scheduler loop drives it: its nodes, dispatcher and health."""

    name: str
    kind: str  # "local" or "slurm"
    loaded: LoadedSite
    dispatcher: Dispatcher
    health: SiteHealth = field(default_factory=SiteHealth)
    slurm: SlurmSettings | None = None
    """A Slurm site's settings (accounts sync, usage); None for other kinds."""
