"""The authenticated reverse proxy in front of interactive sessions (HTTP and WebSocket).

``/sessions/<id>/app/...`` is forwarded, path unchanged (the application serves below that
prefix), to the session's Unix socket (or, on a site whose nodes are other machines, to its
TCP address with TLS pinned to the session's own certificate: `services.sessions.tcp`), for
its owner and the project members the owner allowed (`services.sessions`); everyone else
gets 404, as for a session that does not exist, and a WebSocket handshake is refused (403)
before anything reaches the session.

What crosses the proxy, and what does not:

- the portal's cookies never reach the session (it is code its owner controls, and a member
  the owner allowed would otherwise hand it their portal sign-in), nor does the browser's
  ``Authorization``; the proxy adds the session's secret (``Authorization: token ...``)
  instead, which is how Jupyter knows the request came through the proxy;
- the session's ``Set-Cookie`` never reaches the browser (it would set cookies for the
  portal's own origin);
- a WebSocket from another origin is refused (the browser sends the portal's cookie with it).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterable
from urllib.parse import urlsplit

import anyio
import httpcore
from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from gpucenter.auth.permissions import Permission
from gpucenter.domain.errors import Conflict, DomainError
from gpucenter.domain.messages import msg
from gpucenter.http.deps import SESSION_COOKIE, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.services.context import AppContext
from gpucenter.services.identity import sessions as signins
from gpucenter.services.sessions.endpoint import Endpoint, connect_checked, http_pool, open_endpoint
from gpucenter.services.sessions.tcp import PinRefused, client_context, connect_pinned

router = APIRouter(include_in_schema=False)

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}
_NOT_FORWARDED = _HOP | {b"cookie", b"authorization", b"content-length"}
_NOT_RETURNED = _HOP | {b"set-cookie", b"content-length", b"content-security-policy"}
_MAX_RESPONSE = 64 * 1024 * 1024


def _target(raw_path: bytes, query: bytes) -> bytes:
    return raw_path + (b"?" + query if query else b"")


def _headers(raw: Iterable[tuple[bytes, bytes]], endpoint: Endpoint) -> list[tuple[bytes, bytes]]:
    kept = [(k, v) for k, v in raw if k.lower() not in _NOT_FORWARDED]
    kept.append((b"authorization", b"token " + endpoint.token.encode()))
    return kept


@router.api_route(
    "/sessions/{job_id}/app/{path:path}",
    methods=_METHODS,
    # Signed in and allowed to read jobs; `open_endpoint` then admits the session's owner and
    # the members the owner allowed, and answers 404 to everyone else.
    dependencies=[requires_web(Permission.JOBS_READ)],
)
async def proxy_http(request: Request, caller: WebCaller, job_id: int, path: str) -> Response:
    ctx: AppContext = request.app.state.ctx
    endpoint = await run_in_threadpool(open_endpoint, ctx, caller, job_id)
    try:
        body = await request.body()
        pool = http_pool(endpoint)
        async with pool:
            target = _target(
                request.scope.get("raw_path") or path.encode(), request.url.query.encode()
            )
            try:
                answer = await pool.request(
                    request.method,
                    b"http://session" + target,
                    headers=_headers(request.headers.raw, endpoint),
                    content=body,
                )
            except (PinRefused, httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                raise _unreachable(job_id, exc) from None
    finally:
        endpoint.close()
    content = answer.content[:_MAX_RESPONSE]
    headers = [(k, v) for k, v in answer.headers if k.lower() not in _NOT_RETURNED]
    response = Response(content=content, status_code=answer.status)
    response.raw_headers.extend(headers)
    response.headers["cache-control"] = "no-store"
    return response


def _unreachable(job_id: int, exc: Exception) -> Conflict:
    """409 for a session whose server cannot be reached, or (TCP) does not hold its
    certificate: the request was not sent."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, PinRefused) or isinstance(cause, ssl.SSLCertVerificationError):
        return Conflict.of(msg("error.session_certificate", job=job_id))
    return Conflict.of(msg("error.session_unreachable", job=job_id, why=type(exc).__name__))


def _same_origin(websocket: WebSocket) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return True  # not a browser: the cookie still has to be there
    return urlsplit(origin).netloc == websocket.headers.get("host", "")


async def _pump_in(websocket: WebSocket, upstream: object) -> None:
    send = upstream.send  # type: ignore[attr-defined]
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await send(message["bytes"])
        elif message.get("text") is not None:
            await send(message["text"])


async def _pump_out(websocket: WebSocket, upstream: object) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for data in upstream:  # type: ignore[attr-defined]
            if isinstance(data, bytes):
                await websocket.send_bytes(data)
            else:
                await websocket.send_text(data)


@router.websocket("/sessions/{job_id}/app/{path:path}")
async def proxy_websocket(websocket: WebSocket, job_id: int, path: str) -> None:
    ctx: AppContext = websocket.app.state.ctx
    caller = await run_in_threadpool(signins.resolve, ctx, websocket.cookies.get(SESSION_COOKIE))
    if caller is None or not _same_origin(websocket):
        await websocket.close(code=1008)  # before accept: the handshake is answered 403
        return
    try:
        endpoint = await run_in_threadpool(open_endpoint, ctx, caller, job_id)
    except DomainError:
        await websocket.close(code=1008)
        return
    try:
        raw = websocket.scope.get("raw_path") or path.encode()
        target = _target(raw, websocket.scope.get("query_string", b"")).decode("latin-1")
        offered = list(websocket.scope.get("subprotocols") or [])
        tls: dict[str, object] = {}
        if endpoint.address is None:
            sock = await run_in_threadpool(connect_checked, endpoint)
            uri = "ws://session" + target
        else:
            # The TLS trusts the session's certificate only: an impostor on the port fails
            # the handshake, before the request (and its secret) is written.
            sock = await run_in_threadpool(connect_pinned, endpoint.address)
            sock.setblocking(False)
            tls = {"ssl": client_context(endpoint.address), "server_hostname": "session"}
            uri = "wss://session" + target
        async with ws_connect(
            uri,
            sock=sock,
            **tls,  # type: ignore[arg-type]
            additional_headers={"Authorization": f"token {endpoint.token}"},
            subprotocols=offered or None,
            max_size=None,
            compression=None,
        ) as upstream:
            await websocket.accept(subprotocol=upstream.subprotocol)
            async with anyio.create_task_group() as tasks:

                async def inward() -> None:
                    with contextlib.suppress(WebSocketDisconnect, ConnectionClosed):
                        await _pump_in(websocket, upstream)
                    tasks.cancel_scope.cancel()

                async def outward() -> None:
                    await _pump_out(websocket, upstream)
                    tasks.cancel_scope.cancel()

                tasks.start_soon(inward)
                tasks.start_soon(outward)
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close()
    except (DomainError, OSError, ConnectionClosed, InvalidHandshake):
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close(code=1011)
    finally:
        endpoint.close()
