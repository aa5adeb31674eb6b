"""Browser sessions: a random cookie value, stored only as its SHA-256, revocable at once.

Server-side rows rather than signed cookies, so that signing out (or an admin) ends a session
everywhere, and a stolen database copy holds nothing a browser could present.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from gpucenter.auth.credentials import token_digest
from gpucenter.auth.permissions import Caller
from gpucenter.domain.clock import as_utc
from gpucenter.persistence.tables import UserRow
from gpucenter.persistence.tables_security import WebSessionRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import audit
from gpucenter.services.identity.signin import caller_for

MAX_COOKIE_LEN = 100


def start(ctx: AppContext, caller: Caller, method: str) -> str:
    """Open a session for a caller who has just signed in; return the cookie value."""
    value = secrets.token_urlsafe(32)
    now = ctx.now()
    with ctx.sessions.begin() as s:
        s.add(
            WebSessionRow(
                user_id=caller.user_id,
                session_hash=token_digest(value),
                method=method,
                created_at=now,
                expires_at=now + timedelta(seconds=ctx.settings.session_ttl_s),
            )
        )
    return value


def resolve(ctx: AppContext, value: str | None) -> Caller | None:
    """The caller of a live session, or None (no cookie, unknown, expired or ended)."""
    if not value or len(value) > MAX_COOKIE_LEN:
        return None
    with ctx.sessions.begin() as s:
        row = s.query(WebSessionRow).filter_by(session_hash=token_digest(value)).one_or_none()
        if row is None or row.revoked_at is not None or as_utc(row.expires_at) <= ctx.now():
            return None
        user = s.get(UserRow, row.user_id)
        return caller_for(s, user) if user is not None else None


def end(ctx: AppContext, value: str | None) -> None:
    if not value or len(value) > MAX_COOKIE_LEN:
        return
    now = ctx.now()
    with ctx.sessions.begin() as s:
        row = s.query(WebSessionRow).filter_by(session_hash=token_digest(value)).one_or_none()
        if row is not None and row.revoked_at is None:
            row.revoked_at = now
            user = s.get(UserRow, row.user_id)
            name = user.username if user else ""
            audit.log(s, "auth.sign_out", audit.Actor(row.user_id, name), now, "user", row.user_id)


__all__ = [
    "end",
    "resolve",
    "start",
]
