"""Request dependencies: the application context and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gpucenter.auth.permissions import Caller
from gpucenter.domain.errors import Unauthenticated
from gpucenter.services.context import AppContext
from gpucenter.services.identity import authenticate_token

_bearer = HTTPBearer(auto_error=False)


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


def get_caller(
    ctx: Annotated[AppContext, Depends(get_ctx)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None or not credentials.credentials:
        raise Unauthenticated(
            "send 'Authorization: Bearer <token>'; get a token with gpucenter login"
        )
    return authenticate_token(ctx, credentials.credentials)


Ctx = Annotated[AppContext, Depends(get_ctx)]
CurrentCaller = Annotated[Caller, Depends(get_caller)]
