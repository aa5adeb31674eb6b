"""Small builders for service and API tests: a wired context and a seeded centre."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gpucenter.auth.permissions import Caller
from gpucenter.config import Settings
from gpucenter.dispatch.isolation import SandboxPolicy, sandbox_problem
from gpucenter.dispatch.local.dispatcher import LocalDispatcher
from gpucenter.dispatch.local.isolation import LocalIsolation, single_user_decision
from gpucenter.domain.clock import SystemClock
from gpucenter.domain.cluster import Node, Site
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.db import make_engine, session_factory
from gpucenter.persistence.sealed_env import EnvKeys
from gpucenter.services.context import AppContext
from gpucenter.services.identity import accounts
from gpucenter.services.identity.audit_keys import AuditFiles
from gpucenter.services.identity.signin import caller_for
from gpucenter.services.sites.config import LoadedSite
from gpucenter.services.sites.isolation import sandbox_policy
from gpucenter.services.wiring import ensure_site


def one_node_site(gpus: int = 4, gpu_type: str = "vgpu") -> LoadedSite:
    return LoadedSite(
        Site("local", (Node("local", gpu_type, gpus, "local"),)),
        {"local": list(range(gpus))},
        frozenset({"local"}),
    )


_SANDBOX_PROBLEM: list[str | None] = []


def isolation_for_tests(settings: Settings) -> LocalIsolation:
    """How in-process test sites run jobs: single-user, explicitly, sandboxed where bubblewrap
    works (as `make run` on a laptop does).

    The mode rule would refuse single-user here: `seed_centre` makes two organisations. A
    test is one tenant whatever its data says (every "user" is the test process), so the
    factory decides the mode itself, as anyone who builds a dispatcher by hand does; the
    rule is applied by the wiring, which the mode tests, the server tests and the
    hostile-tenant suite (tests/security/hostile_local) go through.
    """
    if not _SANDBOX_PROBLEM:
        _SANDBOX_PROBLEM.append(sandbox_problem(SandboxPolicy()))
    return LocalIsolation.fixed(
        single_user_decision(sandboxed=_SANDBOX_PROBLEM[0] is None, why=_SANDBOX_PROBLEM[0] or ""),
        sandbox=sandbox_policy(settings),
        jobs_root=(settings.tenant_root / "jobs").resolve(),
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
        isolation=isolation_for_tests(settings),
    )
    sessions = session_factory(
        engine,
        {
            "audit_files": AuditFiles.under(settings.var_dir),
            "env_keys": EnvKeys.under(settings.var_dir),
        },
    )
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


def seed_centre(ctx: AppContext, gpu_hours: float = 100.0, organisations: int = 2) -> Centre:
    """Two projects in two organisations; alice is in 'alpha', bob in 'beta'.

    `organisations=1` puts both in Alpha University: what a test server in single-user mode
    needs (the mode rule refuses to run jobs for two organisations as one identity)."""
    now = datetime.now(tz=UTC)
    beta_org = "Beta Startup" if organisations > 1 else "Alpha University"
    with ctx.sessions.begin() as s:
        accounts.create_organisation(s, "Alpha University", "university", now)
        if organisations > 1:
            accounts.create_organisation(s, "Beta Startup", "startup", now)
        admin = accounts.create_user(s, "root", now, is_admin=True, password="root-password")
        alice = accounts.create_user(s, "alice", now, organisation="Alpha University")
        bob = accounts.create_user(s, "bob", now, organisation=beta_org)
        accounts.create_project(s, "alpha", "Alpha University", now)
        accounts.create_project(s, "beta", beta_org, now)
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
