"""Response hardening and request size limits, as one plain ASGI middleware.

Plain ASGI (not BaseHTTPMiddleware) so that streamed responses (server-sent events, logs)
pass through untouched: headers are added to the response start, bodies are counted as they
arrive.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gpucenter.domain.errors import DomainError
from gpucenter.domain.sessions import is_session_path

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 4 * 1024 * 1024  # the largest script (256 KiB of text) fits many times over

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The interactive API reference pages load their script from a CDN and start it inline.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "img-src 'self' data: https://fastapi.tiangolo.com; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_DOCS = ("/docs", "/redoc")
# An interactive session's pages (JupyterLab) start inline scripts, evaluate code and open
# WebSockets to the same origin; they are the owner's own code, served by the proxy
# (web/session_proxy.py), which keeps cookies away from them in both directions.
SESSION_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:; "
    "style-src 'self' 'unsafe-inline' blob: data:; img-src 'self' data: blob:; "
    "font-src 'self' data:; connect-src 'self' ws: wss:; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
)

COMMON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
)


class BodyTooLarge(DomainError):
    """The request body is over the limit (mapped to 413)."""


class SecurityMiddleware:
    """Adds CSP, frame-ancestors, no-sniff and friends to every response; API responses are
    also `Cache-Control: no-store` (they may carry tokens or tenants' data). Refuses bodies
    over `max_body` bytes, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                await _too_large(send)
                return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge(f"the request body is over {self.max_body} bytes")
            return message

        if path.startswith(_DOCS):
            csp = DOCS_CSP
        elif is_session_path(path):
            csp = SESSION_CSP
        else:
            csp = CSP

        async def hardened_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() != b"content-security-policy"
                ]
                headers.extend(COMMON_HEADERS)
                headers.append((b"content-security-policy", csp.encode()))
                if path.startswith("/api/") and not any(
                    k.lower() == b"cache-control" for k, _ in headers
                ):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, limited_receive, hardened_send)


async def _too_large(send: Send) -> None:
    body = (
        b'{"type":"about:blank","title":"Payload too large","status":413,'
        b'"detail":"the request body is too large"}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *COMMON_HEADERS,
                (b"content-security-policy", CSP.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
