"""CSRF protection for every form: a double-submit token plus an Origin check.

Each page with a form sets a random `gpc_csrf` cookie (HttpOnly, SameSite=Strict) and puts
the same value in a hidden field; a POST is accepted only when both are present and equal
(another site can make a browser send the cookie, but cannot read it to fill the field) and,
where the browser sends an Origin header, when that origin is ours.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request, Response

from gpucenter.domain.errors import PermissionDenied
from gpucenter.domain.messages import msg
from gpucenter.http.deps import CSRF_COOKIE

FIELD = "csrf"


def token_for(request: Request) -> str:
    """The CSRF value for the form about to be rendered (reused while the cookie lives)."""
    current = request.cookies.get(CSRF_COOKIE, "")
    return current if 20 <= len(current) <= 100 else secrets.token_urlsafe(32)


def set_cookie(response: Response, value: str, secure: bool) -> None:
    response.set_cookie(
        CSRF_COOKIE, value, httponly=True, secure=secure, samesite="strict", path="/"
    )


def check(request: Request, submitted: str) -> None:
    """Refuse a form post whose token does not match its cookie, or from another origin."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not submitted or not hmac.compare_digest(cookie, submitted):
        raise PermissionDenied.of(msg("error.form_expired"))
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        ours = f"{request.url.scheme}://{request.url.netloc}"
        if origin != ours:
            raise PermissionDenied.of(msg("error.form_cross_site"))
