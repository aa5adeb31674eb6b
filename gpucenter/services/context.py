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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.config import Settings
from gpucenter.core import DEFAULT_POLICIES, PassCadence, Policies
from gpucenter.dispatch.base import Dispatcher
from gpucenter.domain.clock import Clock, SystemClock
from gpucenter.services.fencing import Fence, fenced
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
    # Which passes backfill (`policies.backfill_interval_s`), decided as the simulator does.
    cadence: PassCadence | None = None
    site_health: SiteHealth = field(default_factory=SiteHealth)
    # The scheduler loop and API requests that touch the dispatcher take turns on this lock.
    dispatch_lock: threading.RLock = field(default_factory=threading.RLock)
    sites: list[SiteRuntime] = field(default_factory=list)
    """The sites, when they were wired explicitly; empty: `site` and `dispatcher` are one."""
    fence: Fence = field(default_factory=Fence)
    """The scheduler leader's epoch (set by the loop): scheduler writes check it."""
    pass_health: PassHealth = field(default_factory=PassHealth)
    """Set by this process's scheduler loop; /readyz reads it (and other processes')."""
    account_sync: Callable[[], object] | None = None
    """Makes the Unix accounts of a multi-tenant local site match gpucenter's users and
    projects (`services.identity.provisioning.AccountSync`); the scheduler leader calls it
    before each pass. None: nobody's accounts are gpucenter's to make."""
    _implicit: SiteRuntime | None = None
    _wanted: set[str] = field(default_factory=set)
    _wanted_lock: threading.Lock = field(default_factory=threading.Lock)

    def want_task(self, name: str) -> None:
        """Ask the leader to run the periodic task `name` soon (a job found that a site's
        accounts are not there yet: sync now rather than at the next interval)."""
        with self._wanted_lock:
            self._wanted.add(name)

    def wanted_tasks(self) -> list[str]:
        """The periodic tasks asked for since the last call (the loop takes them)."""
        with self._wanted_lock:
            names, self._wanted = sorted(self._wanted), set()
        return names

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), tz=UTC)

    @contextmanager
    def fenced(self) -> Iterator[Session]:
        """A transaction of the scheduler: it commits only while this server still leads
        under the epoch it took (`gpucenter.services.fencing`), else raises `Deposed`."""
        with fenced(self.sessions, self.fence) as s:
            yield s

    def site_runtimes(self) -> list[SiteRuntime]:
        """The sites to drive. Without explicit ones, the one site made of `site` and
        `dispatcher` as they are now (tests swap the dispatcher for a faulty one)."""
        if len(self.sites) == 1:
            self.sites[0].dispatcher = self.dispatcher  # one site: they are the same
        if self.sites:
            return self.sites
        rt = self._implicit
        if rt is None or rt.name != self.site.site.name:
            rt = self._implicit = SiteRuntime(self.site.site.name, self.site, self.dispatcher)
        rt.loaded, rt.dispatcher, rt.health = self.site, self.dispatcher, self.site_health
        return [rt]


__all__ = [
    "AppContext",
]
