"""OpenID Connect single sign-on: which local user an identity at the provider is.

The protocol (discovery, the authorisation-code flow with PKCE, the ID token's signature,
issuer, audience, expiry and nonce) is Authlib's, in web/sso.py. This module decides only the
mapping: an (issuer, subject) pair an admin linked to a user, or, where the centre allows it,
a new user made on the first sign-in. Never by e-mail or a name the provider lets people
choose, which would let one account take over another.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.auth.permissions import Caller
from gpucenter.domain.errors import Conflict, Unauthenticated
from gpucenter.domain.messages import msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import UserRow
from gpucenter.persistence.tables_security import OidcIdentityRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import accounts, audit
from gpucenter.services.identity.audit import SYSTEM, Actor
from gpucenter.services.identity.signin import caller_for


def link(
    s: Session, username: str, issuer: str, subject: str, now: datetime, *, by: Actor = SYSTEM
) -> OidcIdentityRow:
    """Let `subject` at `issuer` sign in as `username`."""
    user = repo.user_by_name(s, username)
    existing = s.scalar(
        select(OidcIdentityRow).where(
            OidcIdentityRow.issuer == issuer, OidcIdentityRow.subject == subject
        )
    )
    if existing is not None:
        if existing.user_id != user.id:
            raise Conflict.of(msg("error.identity_linked"))
        return existing
    row = OidcIdentityRow(issuer=issuer, subject=subject, user_id=user.id, created_at=now)
    s.add(row)
    s.flush()
    audit.log(s, "admin.sso_link", by, now, "user", user.id, {"issuer": issuer, "subject": subject})
    return row


def _new_username(s: Session, claims: Mapping[str, Any]) -> str:
    wanted = str(claims.get("preferred_username") or claims.get("sub") or "").lower()
    name = re.sub(r"[^a-z0-9_.-]", "-", wanted)[:60]
    if not name or not name[0].isalpha():
        name = "sso-" + name
    candidate, n = name, 1
    while s.scalar(select(UserRow.id).where(UserRow.username == candidate)) is not None:
        n += 1
        candidate = f"{name[:58]}-{n}"
    return candidate


def sign_in(ctx: AppContext, issuer: str, claims: Mapping[str, Any], address: str) -> Caller:
    """The caller for validated ID-token claims; audit the sign-in either way."""
    subject = str(claims.get("sub", ""))[:255]
    now = ctx.now()
    with ctx.sessions.begin() as s:
        identity = s.scalar(
            select(OidcIdentityRow).where(
                OidcIdentityRow.issuer == issuer, OidcIdentityRow.subject == subject
            )
        )
        user: UserRow | None = None
        if identity is not None:
            user = s.get(UserRow, identity.user_id)
        elif subject and ctx.settings.oidc_create_users:
            user = accounts.create_user(
                s,
                _new_username(s, claims),
                now,
                display_name=str(claims.get("name", ""))[:200],
                by=Actor(None, f"sso:{issuer}"[:100]),
            ).user
            identity = link(s, user.username, issuer, subject, now)
        if user is not None and identity is not None:
            identity.last_login_at = now
            audit.log(
                s,
                "auth.sign_in",
                Actor(user.id, user.username),
                now,
                "user",
                user.id,
                {"method": "oidc", "issuer": issuer, "address": address},
            )
            return caller_for(s, user)
    with ctx.sessions.begin() as s:
        audit.log(
            s,
            "auth.sign_in_failed",
            Actor(None, f"sso:{subject}"[:100]),
            now,
            "oidc_identity",
            subject,
            {"method": "oidc", "issuer": issuer, "address": address},
        )
    raise Unauthenticated.of(msg("error.sso_not_registered"))


__all__ = [
    "link",
    "sign_in",
]
