"""Security state: token scopes, TOTP secrets, browser sessions, SSO identities, audit head,
sign-in limits and known devices.

These live beside (not inside) the account tables so that the identity area can grow without
touching the rows the scheduler reads on every pass.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gpucenter.persistence.tables import Base


class TokenScopeRow(Base):
    """The scopes of an API token; a token without a row has every scope its user holds
    (tokens issued before scopes existed, and the sign-in token of the CLI)."""

    __tablename__ = "api_token_scopes"
    token_id: Mapped[int] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), primary_key=True
    )
    scopes: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)


class TotpSecretRow(Base):
    """A user's TOTP second factor. `enabled_at` is null until a first code confirms it;
    `last_step` is the last time step accepted, so that a code is never accepted twice."""

    __tablename__ = "totp_secrets"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    secret: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    enabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_step: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class WebSessionRow(Base):
    """A browser session: only the SHA-256 of the cookie value is stored (like API tokens),
    so that a copy of the database does not let anyone sign in."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    method: Mapped[str] = mapped_column(String(20), nullable=False, default="password")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OidcIdentityRow(Base):
    """Links an identity at an OpenID Connect provider (issuer, subject) to a local user."""

    __tablename__ = "oidc_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer: Mapped[str] = mapped_column(String(300), nullable=False)
    subject: Mapped[str] = mapped_column(String(255), nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditHeadRow(Base):
    """The newest audit entry's id and hash, kept apart from the chain: the chain alone
    cannot tell that its newest entries were cut off, the head can."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer, nullable=False)
    last_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    entries: Mapped[int] = mapped_column(Integer, nullable=False)


class SignInLimitRow(Base):
    """The state of one sign-in limit, shared by every server process (`serve --workers N`
    and any number of hosts on one database), so that N processes never mean N times the
    guesses. Times are the server clock's seconds, so that a test clock can move them.

    kind 'rate': requests from one address (`place`) in the window starting `window_start`;
    kind 'pair': failed sign-ins of `username` from one address or known browser (`place`);
    kind 'user': failed sign-ins of `username` from anywhere (`place` empty).
    `locked_until` 0 when not locked; `next_lock_s` how long the next lock of a pair or a
    username lasts (it doubles up to a cap); rows untouched for a day are pruned."""

    __tablename__ = "signin_limits"
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)
    username: Mapped[str] = mapped_column(String(100), primary_key=True)
    place: Mapped[str] = mapped_column(String(100), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    window_start: Mapped[float] = mapped_column(Float, nullable=False)
    locked_until: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    next_lock_s: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    updated_at: Mapped[float] = mapped_column(Float, nullable=False, index=True)


class KnownDeviceRow(Base):
    """A browser or an address a user signed in from with the right credentials: such a
    device passes the username-wide throttle that distributed guessing sets off. Only the
    SHA-256 of the browser's cookie (or of the address) is stored."""

    __tablename__ = "known_devices"
    __table_args__ = (UniqueConstraint("user_id", "digest"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    kind: Mapped[str] = mapped_column(String(10), nullable=False)
    digest: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
