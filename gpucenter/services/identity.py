"""Turning presented credentials into a Caller."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.auth.credentials import token_digest, verify_password
from gpucenter.auth.permissions import Caller, Role
from gpucenter.domain.errors import Unauthenticated
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import UserRow
from gpucenter.persistence.tables_audit import RoleAssignmentRow
from gpucenter.services.accounts import issue_token
from gpucenter.services.context import AppContext, as_utc


def caller_for(s: Session, user: UserRow) -> Caller:
    roles = frozenset(
        (Role(role), int(scope_id))
        for role, scope_id in s.execute(
            select(RoleAssignmentRow.role, RoleAssignmentRow.scope_id).where(
                RoleAssignmentRow.user_id == user.id
            )
        )
    )
    return Caller(user.id, user.username, user.is_admin, repo.project_ids_of(s, user.id), roles)


def authenticate_token(ctx: AppContext, token: str) -> Caller:
    """Resolve a bearer token; expired, revoked or unknown tokens are all the same 401."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        row = repo.token_row(s, token_digest(token))
        if row is None or row.revoked_at is not None:
            raise Unauthenticated("invalid or revoked token")
        if row.expires_at is not None and as_utc(row.expires_at) <= now:
            raise Unauthenticated("token expired; sign in again for a new one")
        row.last_used_at = now
        user = s.get(UserRow, row.user_id)
        assert user is not None
        return caller_for(s, user)


def login(ctx: AppContext, username: str, password: str) -> str:
    """Exchange a username and password for a new API token."""
    with ctx.sessions.begin() as s:
        user = s.query(UserRow).filter(UserRow.username == username).one_or_none()
        if not verify_password(user.password_hash if user else None, password) or user is None:
            raise Unauthenticated("wrong username or password")
        return issue_token(s, user.id, ctx.now(), name="login")
