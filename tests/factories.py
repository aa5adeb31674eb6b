"""Small builders for service and API tests: a wired context and a seeded centre."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gpucenter.auth.permissions import Caller
from gpucenter.config import Settings
from gpucenter.dispatch.local.dispatcher import LocalDispatcher
from gpucenter.domain.clock import SystemClock
from gpucenter.domain.cluster import Node, Site
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.db import make_engine, session_factory
from gpucenter.services.context import AppContext
from gpucenter.services.identity import accounts
from gpucenter.services.identity.audit_keys import AuditFiles
from gpucenter.services.identity.signin import caller_for
from gpucenter.services.sites.config import LoadedSite
from gpucenter.services.wiring import ensure_site


def one_node_site(gpus: int = 4, gpu_type: str = "vgpu") -> LoadedSite:
    return LoadedSite(
        Site("local", (Node("local", gpu_type, gpus, "local"),)),
        {"local": list(range(gpus))},
        frozenset({"local"}),
    )


def make_context(settings: Settings, site: LoadedSite | None = None) -> AppContext:
    engine = make_engine(settings.effective_database_url)
    loaded = site or one_node_site()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    clock = SystemClock()
    dispatcher = LocalDispatcher(
        settings.log_dir,
        clock=clock,
        kill_grace_s=settings.kill_grace_s,
        gpu_index_map=loaded.gpu_index_map,
    )
    sessions = session_factory(engine, {"audit_files": AuditFiles.under(settings.var_dir)})
    ctx = AppContext(settings, engine, sessions, loaded, dispatcher, clock)
    ensure_site(ctx)
    return ctx


@dataclass(frozen=True)
class Centre:
    alice: Caller
    alice_token: str
    bob: Caller
    bob_token: str
    admin_token: str


def seed_centre(ctx: AppContext, gpu_hours: float = 100.0) -> Centre:
    """Two projects in two organisations; alice is in 'alpha', bob in 'beta'."""
    now = datetime.now(tz=UTC)
    with ctx.sessions.begin() as s:
        accounts.create_organisation(s, "Alpha University", "university", now)
        accounts.create_organisation(s, "Beta Startup", "startup", now)
        admin = accounts.create_user(s, "root", now, is_admin=True, password="root-password")
        alice = accounts.create_user(s, "alice", now, organisation="Alpha University")
        bob = accounts.create_user(s, "bob", now, organisation="Beta Startup")
        accounts.create_project(s, "alpha", "Alpha University", now)
        accounts.create_project(s, "beta", "Beta Startup", now)
        accounts.add_member(s, "alpha", "alice")
        accounts.add_member(s, "beta", "bob")
        accounts.create_allocation(s, "alpha", gpu_hours, now)
        accounts.create_allocation(s, "beta", gpu_hours, now)
        alice_caller = caller_for(s, repo.user_by_name(s, "alice"))
        bob_caller = caller_for(s, repo.user_by_name(s, "bob"))
    return Centre(alice_caller, alice.token, bob_caller, bob.token, admin.token)


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")
