"""Request dependencies: the application context, the authenticated caller (a bearer token
for the API, a session cookie for the browser pages) and the sign-in guard."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.concurrency import run_in_threadpool

from gpucenter.auth.credentials import token_digest
from gpucenter.auth.permissions import Caller
from gpucenter.domain.errors import Unauthenticated
from gpucenter.domain.messages import msg
from gpucenter.http.errors import LoginRequired
from gpucenter.services.context import AppContext
from gpucenter.services.identity import sessions
from gpucenter.services.identity.ratelimit import SignInGuard
from gpucenter.services.identity.signin import authenticate_token
from gpucenter.services.identity.token_cache import cache_for

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
    another site cannot make a signed-in browser call the API (no CSRF on the API)."""
    return await caller_for_token(ctx, credentials.credentials if credentials else None)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, parsed as `HTTPBearer` does
    (for the raw-ASGI submission path, which has no FastAPI dependencies)."""
    scheme, credentials = get_authorization_scheme_param(authorization)
    if not (authorization and scheme and credentials) or scheme.lower() != "bearer":
        return None
    return credentials


async def caller_for_token(ctx: AppContext, token: str | None) -> Caller:
    """The caller a bearer token stands for, or Unauthenticated.

    A token resolved moments ago is answered from the token cache on the event loop; only a
    miss goes to a worker thread for the database."""
    if not token:
        raise Unauthenticated.of(msg("error.bearer_missing"))
    if len(token) > 200:
        return await run_in_threadpool(authenticate_token, ctx, token)  # refused there
    digest = token_digest(token)
    cached = cache_for(ctx.engine, ctx.settings.token_cache_ttl_s).get(digest, ctx.now())
    if cached is not None:
        return cached
    return await _resolve_once(ctx, token, digest)


# Token resolutions in flight, per event loop, engine and token digest.
_RESOLVING: dict[tuple[int, int, str], asyncio.Future[Caller]] = {}


async def _resolve_once(ctx: AppContext, token: str, digest: str) -> Caller:
    """One database resolution for the concurrent misses of one token: when a server
    starts, or a popular token's cache entry lapses, dozens of requests of one client miss
    together, and resolving each on its own costs a thread and five queries apiece. The
    others wait for the first and get its answer (or its error)."""
    loop = asyncio.get_running_loop()
    key = (id(loop), id(ctx.engine), digest)
    while (waiting := _RESOLVING.get(key)) is not None:
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            if not waiting.cancelled():
                raise  # this request was cancelled, not the resolution it waited for
    future: asyncio.Future[Caller] = loop.create_future()
    _RESOLVING[key] = future
    try:
        caller = await run_in_threadpool(authenticate_token, ctx, token)
    except asyncio.CancelledError:
        future.cancel()  # the waiters resolve for themselves
        raise
    except Exception as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: no "never retrieved" warning without waiters
        raise
    finally:
        del _RESOLVING[key]
    future.set_result(caller)
    return caller


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
