"""The running system's parts, wired once: settings, database, the sites and their dispatchers.

One site (the embedded default, or one Slurm cluster) or several (a sites file): each site
has its own dispatcher and its own health, so that one cluster being down never stops the
others. `AppContext.site` and `AppContext.dispatcher` are what the rest of the server sees:
for several sites, all their nodes as one site and a `SiteBroker` that routes each job to
the site its placement is on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.config import Settings
from gpucenter.core import DEFAULT_POLICIES, PassCadence, Policies
from gpucenter.dispatch.base import Dispatcher
from gpucenter.domain.clock import Clock, SystemClock
from gpucenter.persistence.db import make_engine, session_factory
from gpucenter.services.site_config import LoadedSite, load_site
from gpucenter.services.site_health import SiteHealth

if TYPE_CHECKING:
    from gpucenter.services.slurm_sync import SlurmSettings


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

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), tz=UTC)

    def site_runtimes(self) -> list[SiteRuntime]:
        """The sites to drive. Without explicit ones, the one site made of `site` and
        `dispatcher` as they are now (tests swap the dispatcher for a faulty one)."""
        if len(self.sites) == 1:
            self.sites[0].dispatcher = self.dispatcher  # one site: they are the same
        if self.sites:
            return self.sites
        kind = "slurm" if hasattr(self.dispatcher, "cluster") else "local"
        return [
            SiteRuntime(self.site.site.name, kind, self.site, self.dispatcher, self.site_health)
        ]


def build_context(settings: Settings, dispatcher: Dispatcher | None = None) -> AppContext:
    """Wire the configured database and sites (see `slurm_sites`), or the given dispatcher
    for the one site of `site_file`."""
    engine = make_engine(settings.effective_database_url)
    sessions = session_factory(engine)
    clock = SystemClock()
    if dispatcher is not None:
        site = load_site(settings.site_file)
        return AppContext(settings, engine, sessions, site, dispatcher, clock)
    from gpucenter.services.slurm_sites import build_sites, combine

    runtimes = build_sites(settings, sessions, clock)
    if len(runtimes) == 1:
        (one,) = runtimes
        return AppContext(
            settings,
            engine,
            sessions,
            one.loaded,
            one.dispatcher,
            clock,
            site_health=one.health,
            sites=runtimes,
        )
    site, broker = combine(runtimes)
    return AppContext(
        settings,
        engine,
        sessions,
        site,
        broker,
        clock,
        site_health=runtimes[0].health,
        sites=runtimes,
    )


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
