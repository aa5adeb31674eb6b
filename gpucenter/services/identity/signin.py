"""Turning presented credentials (a token, a password and code, an SSO identity) into a Caller.

Every sign-in, good or bad, is written to the audit log. Failures give one message whatever
went wrong (unknown user, wrong password, missing or wrong code), so that nothing is learnt
about accounts from the answers.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gpucenter.auth import totp
from gpucenter.auth.credentials import token_digest, verify_password
from gpucenter.auth.permissions import Caller, Role
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import Unauthenticated
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import ApiTokenRow, UserRow
from gpucenter.persistence.tables_audit import RoleAssignmentRow
from gpucenter.persistence.tables_security import TokenScopeRow, TotpSecretRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import audit
from gpucenter.services.identity.ratelimit import SignInGuard
from gpucenter.services.identity.token_cache import cache_for
from gpucenter.services.identity.tokens import issue

WRONG_CREDENTIALS = "wrong username or password (or second-factor code)"


def caller_for(
    s: Session,
    user: UserRow,
    *,
    scopes: frozenset[str] | None = None,
    token_id: int | None = None,
) -> Caller:
    roles = frozenset(
        (Role(role), int(scope_id))
        for role, scope_id in s.execute(
            select(RoleAssignmentRow.role, RoleAssignmentRow.scope_id).where(
                RoleAssignmentRow.user_id == user.id
            )
        )
    )
    # A centre-wide centre_admin role is the same as the admin flag.
    is_admin = user.is_admin or (Role.CENTRE_ADMIN, 0) in roles
    return Caller(
        user.id,
        user.username,
        is_admin,
        repo.project_ids_of(s, user.id),
        roles,
        scopes=scopes,
        organisation_id=user.organisation_id,
        token_id=token_id,
    )


def caller_named(s: Session, username: str) -> Caller:
    """The Caller for `username` with all its roles, for commands run on the server host
    (`gpucenter ... --as NAME`): the operator is trusted, no credential is asked.
    NotFound where no such user exists."""
    return caller_for(s, repo.user_by_name(s, username))


LAST_USED_RESOLUTION = timedelta(minutes=1)


def authenticate_token(ctx: AppContext, token: str) -> Caller:
    """Resolve a bearer token; expired, revoked or unknown tokens are all the same 401.

    A token resolved in the last `token_cache_ttl_s` seconds is answered from the process's
    cache (see token_cache.py for why that is safe) without touching the database.
    """
    now = ctx.now()
    if len(token) > 200:
        raise Unauthenticated("invalid or revoked token")
    digest = token_digest(token)
    cache = cache_for(ctx.engine, ctx.settings.token_cache_ttl_s)
    cached = cache.get(digest, now)
    if cached is not None:
        return cached
    with ctx.sessions.begin() as s:
        row = repo.token_row(s, digest)
        if row is None or row.revoked_at is not None:
            raise Unauthenticated("invalid or revoked token")
        expires_at = as_utc(row.expires_at) if row.expires_at is not None else None
        if expires_at is not None and expires_at <= now:
            raise Unauthenticated("token expired; sign in again for a new one")
        # Last-used is kept to the minute: writing it on every request would turn each
        # read into a write and serialise a busy client's requests on one row. Written with
        # a plain statement, not through the session, so the cache is not emptied by it.
        if row.last_used_at is None or now - as_utc(row.last_used_at) >= LAST_USED_RESOLUTION:
            s.connection().execute(
                update(ApiTokenRow).where(ApiTokenRow.id == row.id).values(last_used_at=now)
            )
        user = s.get(UserRow, row.user_id)
        assert user is not None
        scope_row = s.get(TokenScopeRow, row.id)
        scopes = frozenset(scope_row.scopes) if scope_row is not None else None
        caller = caller_for(s, user, scopes=scopes, token_id=row.id)
    cache.put(digest, caller, expires_at)
    return caller


def _second_factor_ok(s: Session, user: UserRow, code: str | None, at: float) -> bool:
    secret = s.get(TotpSecretRow, user.id, with_for_update=True)
    if secret is None or secret.enabled_at is None:
        return True
    step = totp.accepted_step(secret.secret, code or "", at, secret.last_step)
    if step is None:
        return False
    secret.last_step = step
    return True


def password_sign_in(
    ctx: AppContext,
    guard: SignInGuard,
    username: str,
    password: str,
    code: str | None,
    *,
    address: str,
    method: str,
) -> Caller:
    """Check a password (and TOTP code, where the user enabled it) under the rate limits."""
    guard.hit(address)
    guard.check_locked(username)
    now = ctx.now()
    with ctx.sessions.begin() as s:
        user = s.scalar(select(UserRow).where(UserRow.username == username))
        ok = verify_password(user.password_hash if user else None, password)
        if ok and user is not None and _second_factor_ok(s, user, code, ctx.clock.now()):
            guard.succeeded(username)
            audit.log(
                s,
                "auth.sign_in",
                audit.Actor(user.id, user.username),
                now,
                "user",
                user.id,
                {"method": method, "address": address},
            )
            return caller_for(s, user)
    locked = guard.failed(username)
    with ctx.sessions.begin() as s:
        audit.log(
            s,
            "auth.sign_in_failed",
            audit.Actor(None, username[:100]),
            now,
            "user",
            username[:100],
            {"method": method, "address": address, "locked": locked},
        )
    raise Unauthenticated(WRONG_CREDENTIALS)


def login(
    ctx: AppContext,
    guard: SignInGuard,
    username: str,
    password: str,
    code: str | None = None,
    *,
    address: str = "",
) -> str:
    """Exchange a username and password (and code) for a new full-power API token."""
    caller = password_sign_in(
        ctx, guard, username, password, code, address=address, method="password"
    )
    now = ctx.now()
    with ctx.sessions.begin() as s:
        row, token = issue(s, caller.user_id, now, name="login")
        audit.log(
            s, "token.create", audit.Actor.of(caller), now, "api_token", row.id, {"name": "login"}
        )
        return token


__all__ = [
    "authenticate_token",
    "caller_for",
    "caller_named",
    "login",
    "password_sign_in",
]
