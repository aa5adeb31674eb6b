"""The running system's parts, wired once: settings, database, the site and its dispatcher."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.config import Settings
from gpucenter.core import DEFAULT_POLICIES, Policies
from gpucenter.dispatch.base import Dispatcher
from gpucenter.domain.clock import Clock, SystemClock
from gpucenter.persistence.db import make_engine, session_factory
from gpucenter.services.site_config import LoadedSite, load_site
from gpucenter.services.site_health import SiteHealth


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

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), tz=UTC)


def build_context(settings: Settings, dispatcher: Dispatcher | None = None) -> AppContext:
    """Wire the embedded default: the configured database and a local dispatcher."""
    from gpucenter.dispatch.local import LocalDispatcher

    engine = make_engine(settings.effective_database_url)
    site = load_site(settings.site_file)
    clock = SystemClock()
    if dispatcher is None:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        dispatcher = LocalDispatcher(
            settings.log_dir.resolve(),
            clock=clock,
            kill_grace_s=settings.kill_grace_s,
            gpu_index_map=site.gpu_index_map,
        )
    return AppContext(settings, engine, session_factory(engine), site, dispatcher, clock)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
