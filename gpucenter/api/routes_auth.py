"""Sign-in, API tokens and the second factor: the caller's own credentials.

Sign-in, token creation and password changes pass the sign-in limits (ratelimit.py).
A token's secret appears in exactly one response, the one that made it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from gpucenter.api.schemas import (
    MAX_ID,
    CodeIn,
    LoginIn,
    NewTokenOut,
    PasswordChangeIn,
    TokenIn,
    TokenInfoOut,
    TokenOut,
    TotpSetupOut,
)
from gpucenter.auth.permissions import Permission
from gpucenter.http.deps import Ctx, CurrentCaller, Guard, client_address
from gpucenter.http.permissions import public, requires
from gpucenter.services.identity import mfa, tokens
from gpucenter.services.identity import signin as identity

router = APIRouter(prefix="/api/v1", tags=["auth"])


def _info(view: tokens.TokenView) -> TokenInfoOut:
    return TokenInfoOut(
        id=view.id,
        name=view.name,
        scopes=view.scopes,
        created_at=view.created_at,
        expires_at=view.expires_at,
        last_used_at=view.last_used_at,
        revoked_at=view.revoked_at,
    )


@router.post("/auth/token", response_model=TokenOut, dependencies=[public(Permission.SIGN_IN)])
def sign_in(body: LoginIn, ctx: Ctx, guard: Guard, request: Request) -> TokenOut:
    """Exchange a username, password (and TOTP code) for a full-power API token."""
    token = identity.login(
        ctx, guard, body.username, body.password, body.code, address=client_address(request)
    )
    return TokenOut(token=token)


@router.post(
    "/auth/password", status_code=204, dependencies=[requires(Permission.ACCOUNT_SECURITY)]
)
def change_password(
    body: PasswordChangeIn, ctx: Ctx, caller: CurrentCaller, guard: Guard, request: Request
) -> None:
    """Change your own password; 422 names what is wrong with the new one (or the current)."""
    identity.change_password(
        ctx,
        guard,
        caller,
        body.current_password,
        body.new_password,
        address=client_address(request),
    )


@router.get(
    "/tokens", response_model=list[TokenInfoOut], dependencies=[requires(Permission.TOKENS_READ)]
)
def list_tokens(ctx: Ctx, caller: CurrentCaller) -> list[TokenInfoOut]:
    """Your live tokens: names, scopes, expiry and last use (never the secrets)."""
    return [_info(v) for v in tokens.list_mine(ctx, caller)]


@router.post(
    "/tokens",
    status_code=201,
    response_model=NewTokenOut,
    dependencies=[requires(Permission.TOKENS_WRITE)],
)
def create_token(
    body: TokenIn, ctx: Ctx, caller: CurrentCaller, guard: Guard, request: Request
) -> NewTokenOut:
    """Make a scoped, expiring token. Its secret is in this response and nowhere else."""
    guard.hit(client_address(request))
    view, secret = tokens.create(ctx, caller, body.name, body.scopes, body.days)
    return NewTokenOut(**_info(view).model_dump(), token=secret)


@router.delete(
    "/tokens/{token_id}",
    response_model=TokenInfoOut,
    dependencies=[requires(Permission.TOKENS_WRITE)],
)
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=MAX_ID)], ctx: Ctx, caller: CurrentCaller
) -> TokenInfoOut:
    """Revoke one of your tokens at once (centre admins: anyone's)."""
    return _info(tokens.revoke(ctx, caller, token_id))


@router.post(
    "/auth/totp",
    response_model=TotpSetupOut,
    dependencies=[requires(Permission.ACCOUNT_SECURITY)],
)
def totp_begin(ctx: Ctx, caller: CurrentCaller) -> TotpSetupOut:
    """Start setting up a TOTP second factor; confirm it with a code to turn it on."""
    setup = mfa.begin(ctx, caller)
    return TotpSetupOut(secret=setup.secret, uri=setup.uri)


@router.post(
    "/auth/totp/enable", status_code=204, dependencies=[requires(Permission.ACCOUNT_SECURITY)]
)
def totp_enable(body: CodeIn, ctx: Ctx, caller: CurrentCaller) -> None:
    mfa.enable(ctx, caller, body.code)


@router.post(
    "/auth/totp/disable", status_code=204, dependencies=[requires(Permission.ACCOUNT_SECURITY)]
)
def totp_disable(body: CodeIn, ctx: Ctx, caller: CurrentCaller) -> None:
    mfa.disable(ctx, caller, body.code)
