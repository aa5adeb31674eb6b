"""Unix accounts for a multi-tenant local site, kept in step with gpucenter by reconciliation.

Each member of a project gets an account (``gpc-<name>``, from the configured uid range) and
each project a group (``gpcp-<project>``) holding its current members (`unix_accounts`). The
uid and gid made are recorded on the user's row (`UserRow.unix_uid`), which is what a launch
request names as the owner.

**Who runs it, and when: the scheduler leader, at the start of a pass** (`AccountSync`), not the
use cases that change users and memberships. Why:

- memberships change through many doors (CLI, API, portal, awards adding members, single
  sign-on creating users, an operator's SQL): one reconciliation of the desired state against
  ``/etc/passwd`` and ``/etc/group`` catches them all, and a missed hook cannot exist;
- it needs root on the machine where the jobs run, which is where the leader runs; API
  workers and the CLI may run elsewhere, or unprivileged;
- it is idempotent and cheap when nothing changed (one query and a fingerprint), and a failure
  is retried on the next pass instead of being lost with a request;
- it runs before the pass launches anything, so a member added a second ago has an account
  by the time their first job starts.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.dispatch.isolation.unix_accounts import (
    AccountPolicy,
    CommandRunner,
    ProvisioningResult,
    SystemAccounts,
    TenantProject,
    TenantUser,
    provision,
    read_system_accounts,
)
from gpucenter.persistence.tables import MembershipRow, ProjectRow, UserRow

__all__ = ["AccountSync", "desired_tenants", "record_identities"]

log = logging.getLogger(__name__)
RESYNC_S = 300.0
"""Even when gpucenter's side did not change, reconcile this often (repairs drift by hand)."""


def desired_tenants(s: Session) -> tuple[list[TenantUser], list[TenantProject]]:
    """Every project with its members, and every user who is a member of one."""
    members: dict[int, set[int]] = {}
    for project_id, user_id in s.execute(select(MembershipRow.project_id, MembershipRow.user_id)):
        members.setdefault(project_id, set()).add(user_id)
    projects = [
        TenantProject(pid, name, frozenset(members.get(pid, ())))
        for pid, name in s.execute(select(ProjectRow.id, ProjectRow.name).order_by(ProjectRow.id))
    ]
    wanted = sorted({u for ids in members.values() for u in ids})
    users = [
        TenantUser(uid, name)
        for uid, name in s.execute(
            select(UserRow.id, UserRow.username).where(UserRow.id.in_(wanted)).order_by(UserRow.id)
        )
    ]
    return users, projects


def _fingerprint(users: Sequence[TenantUser], projects: Sequence[TenantProject]) -> str:
    text = repr(
        (
            [(u.user_id, u.username) for u in users],
            [(p.project_id, p.name, sorted(p.member_ids)) for p in projects],
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


def record_identities(
    s: Session, names: dict[int, str], actual: SystemAccounts, users: Iterable[int]
) -> int:
    """Write each user's account uid/gid (as the machine has them now) to their row; users
    without an account get none. Returns how many rows changed."""
    current = {
        row.id: (row.unix_uid, row.unix_gid)
        for row in s.execute(select(UserRow.id, UserRow.unix_uid, UserRow.unix_gid))
    }
    changes = []
    for user_id in users:
        entry = actual.user(names[user_id]) if user_id in names else None
        ids = (entry.uid, entry.gid) if entry is not None else (None, None)
        if current.get(user_id) != ids:
            changes.append({"id": user_id, "unix_uid": ids[0], "unix_gid": ids[1]})
    if changes:
        s.execute(update(UserRow), changes)
    return len(changes)


class AccountSync:
    """Provision the desired accounts when gpucenter's side changed (or every `RESYNC_S`).

    Called by the scheduler leader before each pass; returns the result when it provisioned,
    None when nothing needed doing. Errors of single commands are logged and retried on the
    next pass; they never stop scheduling.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        policy: AccountPolicy,
        *,
        read: Callable[[], SystemAccounts] = read_system_accounts,
        run: CommandRunner | None = None,
        resync_s: float = RESYNC_S,
    ) -> None:
        """`read` and `run` are the machine (tests give a fake one)."""
        self._sessions = sessions
        self._policy = policy
        self._read = read
        self._run = run
        self._resync_s = resync_s
        self._done: str | None = None
        self._done_at = float("-inf")

    @property
    def policy(self) -> AccountPolicy:
        return self._policy

    def __call__(self, *, force: bool = False) -> ProvisioningResult | None:
        with self._sessions() as s:
            users, projects = desired_tenants(s)
        key = _fingerprint(users, projects)
        fresh = time.monotonic() - self._done_at < self._resync_s
        if not force and key == self._done and fresh:
            return None
        if self._run is None:
            result = provision(users, projects, self._policy, read=self._read)
        else:
            result = provision(users, projects, self._policy, read=self._read, run=self._run)
        for change in result.applied:
            log.info("accounts: %s (%s)", change, change.why)
        for change, error in result.failed:
            log.error("accounts: %s failed: %s", change, error)
        for conflict in result.plan.conflicts:
            log.warning("accounts: %s: %s", conflict.subject, conflict.reason)
        actual = self._read()
        with self._sessions.begin() as s:
            record_identities(s, dict(result.plan.user_names), actual, [u.user_id for u in users])
        self._done = key if not result.failed else None
        self._done_at = time.monotonic()
        return result
