"""One site as the scheduler loop drives it: its nodes, its dispatcher and its health."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydantic_settings import BaseSettings

from gpucenter.dispatch.base import Dispatcher, SiteKind
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

    @property
    def kind(self) -> SiteKind:
        """What kind of site this is, as its dispatcher declares it (one source of truth)."""
        return self.dispatcher.capabilities.kind
