"""Turning the TOTP second factor on and off for one's own account.

Setting up writes a pending secret; only a correct code from the authenticator turns it on,
so nobody locks themselves out with a mistyped secret. Turning it off needs a current code.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpucenter.auth import totp
from gpucenter.auth.permissions import Caller
from gpucenter.domain.errors import Conflict, ValidationError
from gpucenter.domain.messages import msg
from gpucenter.persistence.tables_security import TotpSecretRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import audit


@dataclass(frozen=True, slots=True)
class TotpSetup:
    secret: str
    uri: str


def begin(ctx: AppContext, caller: Caller) -> TotpSetup:
    now = ctx.now()
    secret = totp.new_secret()
    with ctx.sessions.begin() as s:
        row = s.get(TotpSecretRow, caller.user_id, with_for_update=True)
        if row is not None and row.enabled_at is not None:
            raise Conflict.of(msg("error.mfa_already_on_first"))
        if row is None:
            s.add(TotpSecretRow(user_id=caller.user_id, secret=secret, created_at=now))
        else:
            row.secret, row.created_at, row.last_step = secret, now, 0
    return TotpSetup(secret, totp.provisioning_uri(secret, caller.username))


def _check(row: TotpSecretRow | None, code: str, at: float) -> int:
    step = totp.accepted_step(row.secret, code, at, row.last_step) if row else None
    if step is None:
        raise ValidationError.about("code", msg("error.totp_invalid"))
    return step


def enable(ctx: AppContext, caller: Caller, code: str) -> None:
    now = ctx.now()
    with ctx.sessions.begin() as s:
        row = s.get(TotpSecretRow, caller.user_id, with_for_update=True)
        if row is None:
            raise Conflict.of(msg("error.mfa_start_first"))
        if row.enabled_at is not None:
            raise Conflict.of(msg("error.mfa_already_on"))
        row.last_step = _check(row, code, ctx.clock.now())
        row.enabled_at = now
        audit.log(s, "auth.totp_enable", audit.Actor.of(caller), now, "user", caller.user_id)


def disable(ctx: AppContext, caller: Caller, code: str) -> None:
    now = ctx.now()
    with ctx.sessions.begin() as s:
        row = s.get(TotpSecretRow, caller.user_id, with_for_update=True)
        if row is None or row.enabled_at is None:
            raise Conflict.of(msg("error.mfa_not_on"))
        _check(row, code, ctx.clock.now())
        s.delete(row)
        audit.log(s, "auth.totp_disable", audit.Actor.of(caller), now, "user", caller.user_id)


__all__ = [
    "begin",
    "disable",
    "enable",
]
