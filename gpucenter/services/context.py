"""What every use case is handed: settings, database, the sites and their dispatchers.

`gpucenter.services.wiring.build_context` builds it from the settings (tests build it with
fakes). One site (the embedded default, or one Slurm cluster) or several (a sites file): each site
has its own dispatcher and its own health, so that one cluster being down never stops the
others. `AppContext.site` and `AppContext.dispatcher` are what the rest of the server sees:
for several sites, all their nodes as one site and a `SiteBroker` that routes each job to
the site its placement is on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.config import Settings
from gpucenter.core import DEFAULT_POLICIES, Policies
from gpucenter.dispatch.base import Dispatcher
from gpucenter.domain.clock import Clock, SystemClock
from gpucenter.services.sites.config import LoadedSite
from gpucenter.services.sites.health import SiteHealth
from gpucenter.services.sites.runtime import SiteRuntime


@dataclass
class PassHealth:
    """How this context's scheduling passes go: failures in a row and the last error."""

    failing: int = 0
    last_error: str = ""

    def failed(self, error: str) -> None:
        self.failing += 1
        self.last_error = error[:300]

    def succeeded(self) -> None:
        self.failing = 0
        self.last_error = ""


@dataclass
class AppContext:
    """Everything a use case needs. Built by `build_context`, or by tests with fakes."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    site: LoadedSite
    dispatcher: Dispatcher
    clock: Clock = field(default_factory=SystemClock)
    policies: Policies = DEFAULT_POLICIES
    site_health: SiteHealth = field(default_factory=SiteHealth)
    # The scheduler loop and API requests that touch the dispatcher take turns on this lock.
    dispatch_lock: threading.RLock = field(default_factory=threading.RLock)
    sites: list[SiteRuntime] = field(default_factory=list)
    """The sites, when they were wired explicitly; empty: `site` and `dispatcher` are one."""
    pass_health: PassHealth = field(default_factory=PassHealth)
    """Set by this process's scheduler loop; /readyz reads it (and other processes')."""
    account_sync: Callable[[], object] | None = None
    """Makes the Unix accounts of a multi-tenant local site match gpucenter's users and
    projects (`services.identity.provisioning.AccountSync`); the scheduler leader calls it
    before each pass. None: nobody's accounts are gpucenter's to make."""

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), tz=UTC)

    def site_runtimes(self) -> list[SiteRuntime]:
        """The sites to drive. Without explicit ones, the one site made of `site` and
        `dispatcher` as they are now (tests swap the dispatcher for a faulty one)."""
        if len(self.sites) == 1:
            self.sites[0].dispatcher = self.dispatcher  # one site: they are the same
        if self.sites:
            return self.sites
        return [SiteRuntime(self.site.site.name, self.site, self.dispatcher, self.site_health)]
