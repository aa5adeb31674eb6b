"""Request dependencies: the application context, the authenticated caller (a bearer token
for the API, a session cookie for the browser pages) and the sign-in guard."""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Annotated

import anyio
import anyio.to_thread
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
from gpucenter.services.identity.signin import authenticate_token, resolve_token
from gpucenter.services.identity.token_cache import cache_for

log = logging.getLogger(__name__)
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
    miss goes to a worker thread for the database. An entry in the last part of its life
    is still answered, and resolved again in the background (`REFRESH_AFTER`)."""
    if not token:
        raise Unauthenticated.of(msg("error.bearer_missing"))
    if len(token) > 200:
        return await run_in_threadpool(authenticate_token, ctx, token)  # refused there
    digest = token_digest(token)
    cache = cache_for(ctx.engine, ctx.settings.token_cache_ttl_s)
    found = cache.lookup(digest, ctx.now())
    if found is None:
        return await _resolve_once(ctx, token, digest)
    caller, age = found
    if age >= REFRESH_AFTER * cache.ttl_s:
        _refresh_in_background(ctx, token, digest)
    return caller


# A busy client's token lapses from the cache every `token_cache_ttl_s` seconds, and then
# all its requests in flight wait for the database together (and a worker serving twenty
# busy clients pauses for twenty resolutions at once): the periodic latency spikes of the
# submission benchmark (issue 18). So an entry past this share of its life is resolved
# again while it is still answered; an entry is still never answered after `ttl_s`, which
# is what the cache's safety argument rests on (token_cache.py).
REFRESH_AFTER = 0.6
_REFRESHING: set[asyncio.Task[None]] = set()


def _refresh_in_background(ctx: AppContext, token: str, digest: str) -> None:
    loop = asyncio.get_running_loop()
    if _resolving_key(loop, ctx, digest) in _RESOLVING:
        return  # a resolution is in flight already
    task = loop.create_task(_refresh(ctx, token, digest))
    _REFRESHING.add(task)
    task.add_done_callback(_REFRESHING.discard)


async def _refresh(ctx: AppContext, token: str, digest: str) -> None:
    try:
        await _resolve_once(ctx, token, digest)
    except Unauthenticated:
        # Revoked or expired meanwhile: its next request is refused from the database.
        cache_for(ctx.engine, ctx.settings.token_cache_ttl_s).drop(digest)
    except Exception:  # the request path resolves it again and says what went wrong
        log.warning("background token refresh failed", exc_info=True)


# Token resolutions run in at most this many threads at once. After a start, or when a
# busy server's tokens lapse together, dozens of distinct tokens miss at once; in a thread
# each, twenty threads and the event loop took turns at the interpreter lock, the loop
# got it once in twenty turns, and every request of the worker waited (0.5 s after a
# start, in bench/submit_load.py: issue 18). Two threads do the same resolutions one
# after another while the loop keeps answering the tokens it knows.
RESOLVER_THREADS = 2
_RESOLVER_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def _resolver_slots() -> anyio.CapacityLimiter:
    """The limiter of this event loop (a limiter belongs to the loop that made it)."""
    key = asyncio.get_running_loop()
    found = _RESOLVER_SLOTS.get(key)
    if found is None:
        found = _RESOLVER_SLOTS[key] = anyio.CapacityLimiter(RESOLVER_THREADS)
    return found


# Token resolutions in flight, per event loop, engine and token digest.
_RESOLVING: dict[tuple[int, int, str], asyncio.Future[Caller]] = {}


def _resolving_key(
    loop: asyncio.AbstractEventLoop, ctx: AppContext, digest: str
) -> tuple[int, int, str]:
    return (id(loop), id(ctx.engine), digest)


async def _resolve_once(ctx: AppContext, token: str, digest: str) -> Caller:
    """One database resolution for the concurrent misses of one token: when a server
    starts, or a popular token's cache entry lapses, dozens of requests of one client miss
    together, and resolving each on its own costs a thread and five queries apiece. The
    others wait for the first and get its answer (or its error)."""
    loop = asyncio.get_running_loop()
    key = _resolving_key(loop, ctx, digest)
    while (waiting := _RESOLVING.get(key)) is not None:
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            if not waiting.cancelled():
                raise  # this request was cancelled, not the resolution it waited for
    future: asyncio.Future[Caller] = loop.create_future()
    _RESOLVING[key] = future
    try:
        caller = await anyio.to_thread.run_sync(
            resolve_token, ctx, token, limiter=_resolver_slots()
        )
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
