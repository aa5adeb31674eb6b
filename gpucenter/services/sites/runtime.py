"""One site as the scheduler loop drives it: its nodes, its dispatcher and its health."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydantic_settings import BaseSettings

from gpucenter.dispatch.base import Dispatcher, Launched, SiteKind, StateChange
from gpucenter.services.sites.config import LoadedSite
from gpucenter.services.sites.health import SiteHealth


@dataclass
class SiteRuntime:
    """One site as the scheduler loop drives it: its nodes, dispatcher and health."""

    name: str
    loaded: LoadedSite
    dispatcher: Dispatcher
    health: SiteHealth = field(default_factory=SiteHealth)
    settings: BaseSettings | None = None
    """The kind's own settings (a Slurm site's: for the accounts sync); None: it has none."""
    not_ready: dict[int, datetime] = field(default_factory=dict)
    """Jobs the site said it cannot run yet (`SiteNotReady`), held back until then."""
    unrecorded: dict[int, tuple[int, Launched]] = field(default_factory=dict)
    """Starts the site accepted whose record the database lost: job -> (run, what the site
    answered); the next start of that run records it instead of starting it again."""
    unapplied: list[StateChange] = field(default_factory=list)
    """Ends the site reported whose record the database lost: applied first next pass."""

    @property
    def kind(self) -> SiteKind:
        """What kind of site this is, as its dispatcher declares it (one source of truth)."""
        return self.dispatcher.capabilities.kind


__all__ = [
    "SiteRuntime",
]
