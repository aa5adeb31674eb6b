"""Turning presented credentials (a token, a password and code, an SSO identity) into a Caller.

Every sign-in, good or bad, is written to the audit log. Failures give one message whatever
went wrong (unknown user, wrong password, missing or wrong code), so that nothing is learnt
about accounts from the answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, literal, select, union_all, update
from sqlalchemy.orm import Session

from gpucenter.auth import totp
from gpucenter.auth.credentials import token_digest, verify_password
from gpucenter.auth.permissions import Caller, Role
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import Unauthenticated, ValidationError
from gpucenter.domain.messages import msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import ApiTokenRow, MembershipRow, UserRow
from gpucenter.persistence.tables_audit import RoleAssignmentRow
from gpucenter.persistence.tables_security import TokenScopeRow, TotpSecretRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import accounts, audit, devices
from gpucenter.services.identity.ratelimit import SignInGuard, TooManyRequests
from gpucenter.services.identity.token_cache import cache_for
from gpucenter.services.identity.tokens import issue


def caller_for(
    s: Session,
    user: UserRow,
    *,
    scopes: frozenset[str] | None = None,
    token_id: int | None = None,
) -> Caller:
    return _caller(
        s,
        user.id,
        user.username,
        user.is_admin,
        user.organisation_id,
        scopes=scopes,
        token_id=token_id,
    )


def _caller(
    s: Session,
    user_id: int,
    username: str,
    is_admin: bool,
    organisation_id: int | None,
    *,
    scopes: frozenset[str] | None,
    token_id: int | None,
) -> Caller:
    """The Caller with the user's roles and projects, read in one statement."""
    roles: set[tuple[Role, int]] = set()
    projects: set[int] = set()
    for kind, role, scope_id in s.connection().execute(_ROLES_AND_PROJECTS, {"u": user_id}):
        if kind == "r":
            roles.add((Role(role), int(scope_id)))
        else:
            projects.add(int(scope_id))
    # A centre-wide centre_admin role is the same as the admin flag.
    return Caller(
        user_id,
        username,
        is_admin or (Role.CENTRE_ADMIN, 0) in roles,
        frozenset(projects),
        frozenset(roles),
        scopes=scopes,
        organisation_id=organisation_id,
        token_id=token_id,
    )


# A user's centre and programme roles ('r', role, scope) and projects ('m', '', project).
_ROLES_AND_PROJECTS = union_all(
    select(literal("r"), RoleAssignmentRow.role, RoleAssignmentRow.scope_id).where(
        RoleAssignmentRow.user_id == bindparam("u")
    ),
    select(literal("m"), literal(""), MembershipRow.project_id).where(
        MembershipRow.user_id == bindparam("u")
    ),
)

# A token with its user and scopes: what resolving it needs besides roles and projects.
_TOKEN_AND_USER = (
    select(
        ApiTokenRow.id,
        ApiTokenRow.revoked_at,
        ApiTokenRow.expires_at,
        ApiTokenRow.last_used_at,
        UserRow.id,
        UserRow.username,
        UserRow.is_admin,
        UserRow.organisation_id,
        TokenScopeRow.scopes,
    )
    .join(UserRow, UserRow.id == ApiTokenRow.user_id)
    .outerjoin(TokenScopeRow, TokenScopeRow.token_id == ApiTokenRow.id)
    .where(ApiTokenRow.token_hash == bindparam("digest"))
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
        raise Unauthenticated.of(msg("error.token_invalid"))
    digest = token_digest(token)
    cache = cache_for(ctx.engine, ctx.settings.token_cache_ttl_s)
    cached = cache.get(digest, now)
    if cached is not None:
        return cached
    return resolve_token(ctx, token)


def resolve_token(ctx: AppContext, token: str) -> Caller:
    """`authenticate_token` from the database, never from the cache; the answer is cached
    (unless the cache was emptied meanwhile: see `TokenCache.generation`)."""
    now = ctx.now()
    if len(token) > 200:
        raise Unauthenticated.of(msg("error.token_invalid"))
    digest = token_digest(token)
    cache = cache_for(ctx.engine, ctx.settings.token_cache_ttl_s)
    generation = cache.generation
    with ctx.sessions.begin() as s:
        # Two statements on the session's connection, no ORM objects: under load each busy
        # client's token is resolved again every couple of seconds in every process.
        conn = s.connection()
        row = conn.execute(_TOKEN_AND_USER, {"digest": digest}).first()
        if row is None:
            raise Unauthenticated.of(msg("error.token_invalid"))
        token_id, revoked_at, expires, last_used_at, user_id, username, admin, org, scoped = row
        if revoked_at is not None:
            raise Unauthenticated.of(msg("error.token_invalid"))
        expires_at = as_utc(expires) if expires is not None else None
        if expires_at is not None and expires_at <= now:
            raise Unauthenticated.of(msg("error.token_expired"))
        # Last-used is kept to the minute: writing it on every request would turn each
        # read into a write and serialise a busy client's requests on one row. Written with
        # a plain statement, not through the session, so the cache is not emptied by it.
        if last_used_at is None or now - as_utc(last_used_at) >= LAST_USED_RESOLUTION:
            conn.execute(
                update(ApiTokenRow).where(ApiTokenRow.id == token_id).values(last_used_at=now)
            )
        scopes = frozenset(scoped) if scoped is not None else None
        caller = _caller(s, user_id, username, admin, org, scopes=scopes, token_id=token_id)
    cache.put(digest, caller, expires_at, generation)
    return caller


def rehearse(s: Session) -> None:
    """Run the statements of a token resolution for a token and user nobody has: compiles
    them and loads the tables' catalog entries in this session's database backend, so
    that the first real resolutions on it cost what later ones do (`services/warmup.py`)."""
    conn = s.connection()
    conn.execute(_TOKEN_AND_USER, {"digest": "0" * 64}).first()
    conn.execute(_ROLES_AND_PROJECTS, {"u": 0}).all()


def _second_factor_enrolled(s: Session, user: UserRow | None) -> bool:
    if user is None:
        return False
    secret = s.get(TotpSecretRow, user.id)
    return secret is not None and secret.enabled_at is not None


def _second_factor_ok(s: Session, user: UserRow, code: str | None, at: float) -> bool:
    secret = s.get(TotpSecretRow, user.id, with_for_update=True)
    if secret is None or secret.enabled_at is None:
        return True
    step = totp.accepted_step(secret.secret, code or "", at, secret.last_step)
    if step is None:
        return False
    secret.last_step = step
    return True


@dataclass(frozen=True, slots=True)
class SignedIn:
    """Who signed in, and for a browser the `gpc_device` cookie value to set (None: API)."""

    caller: Caller
    device_cookie: str | None = None


def password_sign_in(
    ctx: AppContext,
    guard: SignInGuard,
    username: str,
    password: str,
    code: str | None,
    *,
    address: str,
    method: str,
    device_cookie: str | None = None,
    browser: bool = False,
) -> SignedIn:
    """Check a password (and TOTP code, where the user enabled it) under the sign-in limits.

    In order: the address's request rate (a known browser is exempt: it is not the one
    spraying), then the pair of this username and this address (or known browser), locked
    after repeated failures; then the password and code. While the username-wide throttle
    is on (guessing from many addresses), only a known browser or address, or a user whose
    second factor is enrolled giving the right password and code, gets in: anyone else is
    answered 429 whatever they sent, so the throttle tells nothing about the password.
    """
    known_addresses = ctx.settings.signin_known_addresses
    with ctx.sessions.begin() as s:
        user = s.scalar(select(UserRow).where(UserRow.username == username))
        user_id = user.id if user is not None else None
        seen = devices.recognise(s, user_id, device_cookie, address if known_addresses else None)
    if seen.browser is None:
        guard.hit(address)
    where = f"browser:{seen.browser}" if seen.browser else address
    attempt = guard.attempt(username, where)
    shut_out = attempt.throttle_s > 0 and not seen.known
    now = ctx.now()
    signed_in: SignedIn | None = None
    with ctx.sessions.begin() as s:
        user = s.get(UserRow, user_id) if user_id is not None else None
        ok = verify_password(user.password_hash if user else None, password)
        passes = not shut_out or _second_factor_enrolled(s, user)
        if ok and passes and user is not None and _second_factor_ok(s, user, code, ctx.clock.now()):
            cookie = devices.remember(
                s,
                user.id,
                now,
                address=address if known_addresses else None,
                browser=browser,
                cookie=device_cookie,
                keep_days=ctx.settings.signin_device_days,
            )
            audit.log(
                s,
                "auth.sign_in",
                audit.Actor(user.id, user.username),
                now,
                "user",
                user.id,
                {"method": method, "address": address, "known_device": seen.known},
            )
            signed_in = SignedIn(caller_for(s, user), cookie)
    if signed_in is not None:
        guard.succeeded(username, where)
        return signed_in
    throttles = guard.failed(username)
    with ctx.sessions.begin() as s:
        audit.log(
            s,
            "auth.sign_in_failed",
            audit.Actor(None, username[:100]),
            now,
            "user",
            username[:100],
            {
                "method": method,
                "address": address,
                "locked": attempt.locks,
                "throttled": shut_out or throttles,
            },
        )
    if shut_out:
        raise TooManyRequests(msg("error.rate_user"), attempt.throttle_s, "user")
    raise Unauthenticated.of(msg("error.wrong_credentials"))


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
    ).caller
    now = ctx.now()
    with ctx.sessions.begin() as s:
        row, token = issue(s, caller.user_id, now, name="login")
        audit.log(
            s, "token.create", audit.Actor.of(caller), now, "api_token", row.id, {"name": "login"}
        )
        return token


def change_password(
    ctx: AppContext,
    guard: SignInGuard,
    caller: Caller,
    current: str,
    new: str,
    *,
    address: str,
) -> None:
    """A signed-in user's change of their own password. The new one must pass the policy
    (checked first: a refusal costs no attempt); the current one is checked under the same
    limits as a sign-in, so that a stolen token is no way around them to guess it."""
    accounts.check_password(new, caller.username, "new_password")
    guard.hit(address)
    guard.attempt(caller.username, address)
    with ctx.sessions.begin() as s:
        user = s.get(UserRow, caller.user_id)
        ok = verify_password(user.password_hash if user else None, current)
        if ok and user is not None:
            accounts.set_password(
                s, user.username, new, ctx.now(), by=audit.Actor.of(caller), field="new_password"
            )
    if ok:
        guard.succeeded(caller.username, address)
        return
    guard.failed(caller.username)
    raise ValidationError.about("current_password", msg("error.not_current_password"))


__all__ = [
    "SignedIn",
    "authenticate_token",
    "caller_for",
    "caller_named",
    "change_password",
    "login",
    "password_sign_in",
]
