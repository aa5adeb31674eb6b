"""The local site's tenant isolation, from the settings: the mode rule, the sandbox, the
accounts, and the server's own state kept private.

The mode rule (`decide_mode`, said loudly at start and again whenever it changes):

- ``isolation=multi_tenant`` (``auto`` as root): every job runs as its owner's Unix account in
  a bubblewrap sandbox. Without root or a working bubblewrap no job starts.
- ``isolation=single_user`` (``auto`` as anyone else, e.g. ``make run`` on a laptop): every
  job runs as the server's own user, sandboxed where bubblewrap works. Allowed only while the
  site has at most one organisation; the count is read again every few seconds, so the
  moment an admin adds a second organisation, jobs stop starting (they wait, and say why).

Where things are (`Settings.tenant_root`, by default ``<var_dir>/tenants``): ``homes/<account>``
(0700, the owner's), ``projects/<group>`` (root:group 2770) and ``jobs/`` (each run's output
and working directory, the owner's). The state directory itself (database, key ring
``secrets/``, the dispatcher's spool, metrics, the CLI token of the demo) is made 0700 at start
and hidden from every job, as are the site files and `Settings.isolation_hidden_paths`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.config import Settings
from gpucenter.dispatch.isolation import (
    AccountPolicy,
    IsolationSetting,
    ModeDecision,
    SandboxPolicy,
    UnsafeFile,
    decide_mode,
    ensure_private_dir,
    ensure_private_file,
    sandbox_problem,
)
from gpucenter.dispatch.local.isolation import LocalIsolation
from gpucenter.persistence.tables import OrganisationRow

__all__ = [
    "ModeGate",
    "account_policy",
    "effective_setting",
    "local_isolation",
    "sandbox_policy",
    "secure_state",
]

log = logging.getLogger(__name__)
COUNT_TTL_S = 5.0
"""How long a count of organisations is reused (the rule is asked before every start)."""


def effective_setting(settings: Settings, euid: int | None = None) -> IsolationSetting:
    """``auto`` resolved: multi-tenant as root, single-user otherwise."""
    if settings.isolation == "auto":
        root = (os.geteuid() if euid is None else euid) == 0
        return IsolationSetting.MULTI_TENANT if root else IsolationSetting.SINGLE_USER
    return IsolationSetting(settings.isolation)


def account_policy(settings: Settings) -> AccountPolicy:
    """The accounts gpucenter makes on this machine (range, prefixes, homes)."""
    return AccountPolicy(
        uid_min=settings.isolation_uid_min,
        uid_max=settings.isolation_uid_max,
        user_prefix=settings.isolation_user_prefix,
        group_prefix=settings.isolation_group_prefix,
        home_root=settings.tenant_root.resolve() / "homes",
    )


def _database_file(settings: Settings) -> Path | None:
    url = make_url(settings.effective_database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).resolve()


def sandbox_policy(settings: Settings) -> SandboxPolicy:
    """The sandbox every job of the site gets: the server's state and configuration hidden,
    other tenants left out of /etc/passwd and /etc/group."""
    hidden = [str(settings.var_dir.resolve())]
    for extra in (settings.site_file, settings.sites_file, _database_file(settings)):
        if extra is not None:
            hidden.append(str(Path(extra).resolve()))
    hidden += [str(Path(p).resolve()) for p in settings.isolation_hidden_paths]
    return SandboxPolicy(
        device_dir=str(settings.isolation_device_dir),
        share_network=settings.isolation_share_network,
        extra_ro_paths=tuple(settings.isolation_extra_ro_paths),
        hidden_paths=tuple(dict.fromkeys(hidden)),
        tenant_ids=range(settings.isolation_uid_min, settings.isolation_uid_max + 1),
    )


def secure_state(settings: Settings) -> list[str]:
    """The state directory 0700 and the SQLite database 0600, whoever made them with a
    looser umask (`gpucenter db upgrade`, an older gpucenter); returns what changed."""
    changes = ensure_private_dir(settings.var_dir.resolve())
    for path in (settings.var_dir / "secrets",):
        if path.is_dir() and not path.is_symlink():
            changes += ensure_private_dir(path.resolve())
    database = _database_file(settings)
    if database is not None:
        for path in (database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))):
            if path.is_file() and not path.is_symlink():
                try:
                    changes += ensure_private_file(path)
                except UnsafeFile as exc:
                    log.error("the database file is not the server's own: %s", exc)
    for change in changes:
        log.warning("server state made private: %s", change)
    return changes


class ModeGate:
    """`decide_mode` with the site's current number of organisations (counted at most every
    `COUNT_TTL_S`); logs the decision at start and whenever it changes, at its level."""

    def __init__(
        self,
        setting: IsolationSetting,
        count_organisations: Callable[[], int],
        problem: str | None,
        euid: int | None = None,
        owner: str | None = None,
    ) -> None:
        self._setting = setting
        self._owner = owner
        self._count = count_organisations
        self._problem = problem
        self._euid = os.geteuid() if euid is None else euid
        self._lock = threading.Lock()
        self._counted_at = float("-inf")
        self._organisations = 0
        self._decision: ModeDecision | None = None

    def __call__(self) -> ModeDecision:
        with self._lock:
            now = time.monotonic()
            if self._decision is None or now - self._counted_at >= COUNT_TTL_S:
                try:
                    self._organisations = self._count()
                except Exception as exc:  # the database is down: keep the last decision
                    log.warning("cannot count organisations (%s)", exc.__class__.__name__)
                    if self._decision is not None:
                        return self._decision
                    self._organisations = 2  # unknown: assume several, the safe side
                self._counted_at = now
                decision = decide_mode(
                    euid=self._euid,
                    setting=self._setting,
                    organisations=self._organisations,
                    sandbox_problem=self._problem,
                    owner=self._owner,
                )
                if self._decision is None or decision.mode is not self._decision.mode:
                    log.log(decision.level, "job isolation: %s", decision.message)
                self._decision = decision
            return self._decision


def organisation_counter(sessions: sessionmaker[Session]) -> Callable[[], int]:
    def count() -> int:
        with sessions() as s:
            return int(s.scalar(select(func.count(OrganisationRow.id))) or 0)

    return count


def nvml_minor_numbers() -> dict[int, int]:
    """NVML index -> ``/dev/nvidia<minor>`` of this machine's GPUs (empty without a driver)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return {}
    try:
        found = {}
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            found[index] = int(pynvml.nvmlDeviceGetMinorNumber(handle))
        return found
    except Exception:
        return {}
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def local_isolation(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    jobs_root: Path,
    device_nodes: frozenset[str],
) -> LocalIsolation:
    """The isolation of one local site, with the mode rule applied (see the module text)."""
    setting = effective_setting(settings)
    policy = sandbox_policy(settings)
    problem = sandbox_problem(policy)
    gate = ModeGate(
        setting, organisation_counter(sessions), problem, owner=settings.single_user_owner
    )
    gate()  # said at start, loudly where it must be
    multi = setting is IsolationSetting.MULTI_TENANT
    return LocalIsolation(
        mode=gate,
        sandbox=policy,
        accounts=account_policy(settings) if multi else None,
        jobs_root=jobs_root,
        projects_root=settings.tenant_root.resolve() / "projects" if multi else None,
        device_nodes=device_nodes,
        gpu_minors=nvml_minor_numbers() if device_nodes else {},
    )
