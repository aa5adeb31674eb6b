"""The centre admin's use cases as the admin pages and /api/v1/admin call them: users,
organisations, centre-wide roles and the audit log, one transaction each, views returned.

Why: accounts.py and audit.py take an open Session so that set-up scripts and the CLI can
compose them; routes and pages hold neither sessions nor rows. Who may grant which role is
`auth.permissions.can_assign_role`, checked by the caller of `grant_role`/`revoke_role`
before the form or body is acted on (each interface words its refusal itself).
"""

from __future__ import annotations

from dataclasses import dataclass

from gpucenter.auth.permissions import Caller
from gpucenter.services.context import AppContext
from gpucenter.services.identity import accounts, audit
from gpucenter.services.identity.views import AuditEntryView, OrganisationView, UserView


@dataclass(frozen=True, slots=True)
class Directory:
    """What the admin page lists: users (with their organisation's name or ''),
    organisations, and (username, role) for every centre-wide role held."""

    users: list[tuple[UserView, str]]
    organisations: list[OrganisationView]
    roles: list[tuple[str, str]]


def directory(ctx: AppContext) -> Directory:
    with ctx.sessions.begin() as s:
        users = [(UserView.of(u), org) for u, org in accounts.list_users(s)]
        orgs = [OrganisationView.of(o) for o in accounts.list_organisations(s)]
        return Directory(users, orgs, accounts.centre_roles(s))


def centre_roles(ctx: AppContext) -> list[tuple[str, str]]:
    with ctx.sessions.begin() as s:
        return accounts.centre_roles(s)


def create_user(
    ctx: AppContext,
    caller: Caller,
    username: str,
    *,
    organisation: str | None,
    password: str,
    display_name: str,
) -> UserView:
    """A user with a password (their first API token is made and not shown here)."""
    with ctx.sessions.begin() as s:
        made = accounts.create_user(
            s,
            username,
            ctx.now(),
            organisation=organisation,
            password=password,
            display_name=display_name,
            by=audit.Actor.of(caller),
        )
        return UserView.of(made.user)


def create_organisation(ctx: AppContext, caller: Caller, name: str, kind: str) -> OrganisationView:
    with ctx.sessions.begin() as s:
        row = accounts.create_organisation(s, name, kind, ctx.now(), by=audit.Actor.of(caller))
        return OrganisationView.of(row)


def grant_role(ctx: AppContext, caller: Caller, username: str, role: str) -> None:
    """Give `username` a centre-wide role (idempotent); audited as the caller."""
    with ctx.sessions.begin() as s:
        accounts.grant_role(s, username, role, ctx.now(), by=audit.Actor.of(caller))


def revoke_role(ctx: AppContext, caller: Caller, username: str, role: str) -> None:
    """Take a centre-wide role away; NotFound if the user does not hold it."""
    with ctx.sessions.begin() as s:
        accounts.revoke_role(s, username, role, ctx.now(), by=audit.Actor.of(caller))


def audit_entries(
    ctx: AppContext, *, limit: int = 100, before_id: int | None = None
) -> list[AuditEntryView]:
    """The newest entries first; page with `before_id`."""
    with ctx.sessions.begin() as s:
        return [AuditEntryView.of(e) for e in audit.entries(s, limit=limit, before_id=before_id)]


def verify_audit(ctx: AppContext) -> audit.VerifyResult:
    """Walk the hash chain; the first entry altered or removed, if any."""
    with ctx.sessions.begin() as s:
        return audit.verify(s)


def audit_page(
    ctx: AppContext, *, verify: bool, limit: int = 100
) -> tuple[audit.VerifyResult | None, list[AuditEntryView]]:
    """The chain's check (when asked) and the newest entries, read in one transaction."""
    with ctx.sessions.begin() as s:
        result = audit.verify(s) if verify else None
        entries = [AuditEntryView.of(e) for e in audit.entries(s, limit=limit)]
        return result, entries


__all__ = [
    "Directory",
    "audit_entries",
    "audit_page",
    "centre_roles",
    "create_organisation",
    "create_user",
    "directory",
    "grant_role",
    "revoke_role",
    "verify_audit",
]
