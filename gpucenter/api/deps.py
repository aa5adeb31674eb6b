"""Request dependencies: the application context, the authenticated caller (a bearer token
for the API, a session cookie for the browser pages) and the sign-in guard."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from gpucenter.api.errors import LoginRequired
from gpucenter.auth.credentials import token_digest
from gpucenter.auth.permissions import Caller
from gpucenter.domain.errors import Unauthenticated
from gpucenter.services import sessions
from gpucenter.services.context import AppContext
from gpucenter.services.identity import authenticate_token
from gpucenter.services.ratelimit import SignInGuard
from gpucenter.services.token_cache import cache_for

_bearer = HTTPBearer(auto_error=False)
SESSION_COOKIE = "gpc_session"
CSRF_COOKIE = "gpc_csrf"


async def get_ctx(request: Request) -> AppContext:
    """Async on purpose: a plain function dependency would cost a thread hop per request."""
    ctx: AppContext = request.app.state.ctx
    return ctx


async def get_caller(
    ctx: Annotated[AppContext, Depends(get_ctx)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """The API accepts bearer tokens only: a cookie is never enough for it, so a page on
    another site cannot make a signed-in browser call the API (no CSRF on the API).

    A token resolved moments ago is answered from the token cache on the event loop; only a
    miss goes to a worker thread for the database."""
    if credentials is None or not credentials.credentials:
        raise Unauthenticated(
            "send 'Authorization: Bearer <token>'; get a token with gpucenter login"
        )
    token = credentials.credentials
    if len(token) <= 200:
        cache = cache_for(ctx.engine, ctx.settings.token_cache_ttl_s)
        cached = cache.get(token_digest(token), ctx.now())
        if cached is not None:
            return cached
    return await run_in_threadpool(authenticate_token, ctx, token)


def get_web_caller(request: Request, ctx: Annotated[AppContext, Depends(get_ctx)]) -> Caller:
    """The browser pages accept the session cookie only; without one, go and sign in."""
    caller = sessions.resolve(ctx, request.cookies.get(SESSION_COOKIE))
    if caller is None:
        raise LoginRequired("sign in first")
    return caller


def get_guard(request: Request) -> SignInGuard:
    guard: SignInGuard = request.app.state.guard
    return guard


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


Ctx = Annotated[AppContext, Depends(get_ctx)]
CurrentCaller = Annotated[Caller, Depends(get_caller)]
WebCaller = Annotated[Caller, Depends(get_web_caller)]
Guard = Annotated[SignInGuard, Depends(get_guard)]
