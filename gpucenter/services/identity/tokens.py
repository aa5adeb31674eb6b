"""API tokens as their owners see them: make (scoped, expiring), list, revoke.

The secret is returned once, by `create`, and stored only as its SHA-256; lists show the
name, scopes, expiry and last use, never the secret. Every change goes to the audit log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.auth.credentials import new_token, token_digest
from gpucenter.auth.permissions import Caller, can_manage_token, check_scopes
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import NotFound, ValidationError
from gpucenter.domain.messages import msg
from gpucenter.persistence.tables import ApiTokenRow
from gpucenter.persistence.tables_security import TokenScopeRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import audit

_TOKEN_NAME = re.compile(r"^[\w .:@-]{0,100}$")


def issue(
    s: Session,
    user_id: int,
    now: datetime,
    *,
    name: str = "",
    days: int = 90,
    scopes: frozenset[str] | None = None,
) -> tuple[ApiTokenRow, str]:
    """Write a new token row (and its scopes); return the row and the secret."""
    token = new_token()
    row = ApiTokenRow(
        user_id=user_id,
        name=name,
        token_hash=token_digest(token),
        created_at=now,
        expires_at=now + timedelta(days=days),
    )
    s.add(row)
    s.flush()
    if scopes is not None:
        s.add(TokenScopeRow(token_id=row.id, scopes=sorted(scopes)))
        s.flush()
    return row, token


@dataclass(frozen=True, slots=True)
class TokenView:
    id: int
    name: str
    scopes: list[str] | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


def _view(row: ApiTokenRow, scopes: list[str] | None) -> TokenView:
    return TokenView(
        row.id,
        row.name,
        scopes,
        as_utc(row.created_at),
        as_utc(row.expires_at) if row.expires_at else None,
        as_utc(row.last_used_at) if row.last_used_at else None,
        as_utc(row.revoked_at) if row.revoked_at else None,
    )


def create(
    ctx: AppContext, caller: Caller, name: str, scopes: list[str], days: int
) -> tuple[TokenView, str]:
    """Make a token for the caller with no more scopes than the caller holds now."""
    if not _TOKEN_NAME.match(name):
        raise ValidationError.about("name", msg("error.token_name"))
    if not 1 <= days <= ctx.settings.token_days_max:
        raise ValidationError.about(
            "days", msg("error.between", low=1, high=ctx.settings.token_days_max)
        )
    granted = check_scopes(caller, scopes)
    now = ctx.now()
    with ctx.sessions.begin() as s:
        row, token = issue(s, caller.user_id, now, name=name, days=days, scopes=granted)
        audit.log(
            s,
            "token.create",
            audit.Actor.of(caller),
            now,
            "api_token",
            row.id,
            {"name": name, "scopes": sorted(granted), "days": days},
        )
        return _view(row, sorted(granted)), token


def list_mine(ctx: AppContext, caller: Caller, include_revoked: bool = False) -> list[TokenView]:
    with ctx.sessions.begin() as s:
        stmt = select(ApiTokenRow, TokenScopeRow.scopes).outerjoin(
            TokenScopeRow, TokenScopeRow.token_id == ApiTokenRow.id
        )
        stmt = stmt.where(ApiTokenRow.user_id == caller.user_id).order_by(ApiTokenRow.id)
        if not include_revoked:
            stmt = stmt.where(ApiTokenRow.revoked_at.is_(None))
        return [_view(row, scopes) for row, scopes in s.execute(stmt)]


def revoke(ctx: AppContext, caller: Caller, token_id: int) -> TokenView:
    """Revoke a token at once; revoking one already revoked changes nothing."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        row = s.get(ApiTokenRow, token_id)
        if row is None or not can_manage_token(caller, row.user_id):
            raise NotFound("token", token_id)
        if row.revoked_at is None:
            row.revoked_at = now
            audit.log(
                s,
                "token.revoke",
                audit.Actor.of(caller),
                now,
                "api_token",
                row.id,
                {"name": row.name, "owner_id": row.user_id},
            )
        scope_row = s.get(TokenScopeRow, row.id)
        return _view(row, list(scope_row.scopes) if scope_row else None)


__all__ = [
    "TokenView",
    "create",
    "issue",
    "list_mine",
    "revoke",
]
