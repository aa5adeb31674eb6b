"""The browser portal's entry: sign-in (password and code, or single sign-on), the dashboard,
the language switch and sign-out. Protected like the API: every page declares its
permission, sessions live in HttpOnly, SameSite cookies, and every form carries a CSRF
token."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gpucenter.auth.permissions import Caller, Permission
from gpucenter.domain.errors import Unauthenticated
from gpucenter.http import csrf
from gpucenter.http.deps import SESSION_COOKIE, Ctx, Guard, WebCaller, client_address
from gpucenter.http.permissions import public, requires_web
from gpucenter.services.context import AppContext
from gpucenter.services.identity import devices, sessions
from gpucenter.services.identity import signin as identity
from gpucenter.services.identity.ratelimit import TooManyRequests
from gpucenter.services.ops import overview, portal_queries
from gpucenter.web import i18n, render
from gpucenter.web.i18n import N_

router = APIRouter(include_in_schema=False)


def page(
    request: Request, ctx: AppContext, name: str, status: int = 200, **values: object
) -> HTMLResponse:
    """A page for someone not signed in yet (sign-in, errors before a session)."""
    return render.page(request, ctx, name, None, status, **values)


def signed_in(ctx: AppContext, caller: Caller, method: str) -> RedirectResponse:
    """Open a session for `caller` and send the browser to the overview."""
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        sessions.start(ctx, caller, method),
        max_age=ctx.settings.session_ttl_s,
        httponly=True,
        secure=ctx.settings.cookie_secure,
        samesite="lax",
        path="/",
    )
    return response


@router.get("/", response_class=HTMLResponse, dependencies=[requires_web(Permission.SITE_READ)])
def index(ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    view = overview.site_overview(ctx)
    total = sum(n.gpu_count for n in view.nodes)
    busy = sum(n.gpus_busy for n in view.nodes)
    return render.page(
        request,
        ctx,
        "index.html",
        caller,
        site=view,
        total=total,
        busy=busy,
        api_docs=str(request.url_for("swagger_ui_html")),
        mine=portal_queries.dashboard(ctx, caller),
    )


@router.get("/login", response_class=HTMLResponse, dependencies=[public(Permission.SIGN_IN)])
def login_page(ctx: Ctx, request: Request) -> HTMLResponse:
    return page(request, ctx, "login.html", sso=bool(ctx.settings.oidc_issuer))


_TOO_MANY = (
    N_("Too many attempts. Wait a few minutes."),
    N_(
        "Too many failed sign-ins for this account from unfamiliar devices. Sign in from a "
        "browser you have used here before, or with your second-factor code."
    ),
)


@router.post("/login", dependencies=[public(Permission.SIGN_IN)])
def login_submit(
    ctx: Ctx,
    guard: Guard,
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form(alias=csrf.FIELD, max_length=100)],
    code: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    csrf.check(request, csrf_token)
    try:
        done = identity.password_sign_in(
            ctx,
            guard,
            username,
            password,
            code or None,
            address=client_address(request),
            method="web",
            device_cookie=request.cookies.get(devices.COOKIE),
            browser=True,
        )
    except (Unauthenticated, TooManyRequests) as exc:
        # Say no more than the API does: which of name, password or code was wrong stays
        # unknown to the sender.
        if isinstance(exc, TooManyRequests):
            status, error = 429, render.t(request, _TOO_MANY[exc.reason == "user"])
        else:
            status = 401
            error = render.t(request, "The username, password or code is not right.")
        sso = bool(ctx.settings.oidc_issuer)
        return page(
            request, ctx, "login.html", status, error=error, sso=sso, typed_username=username
        )
    response = signed_in(ctx, done.caller, "password")
    if done.device_cookie:
        # This browser is now a known device of the user: it passes the throttle that
        # guessing from many addresses sets off.
        response.set_cookie(
            devices.COOKIE,
            done.device_cookie,
            max_age=ctx.settings.signin_device_days * 86400,
            httponly=True,
            secure=ctx.settings.cookie_secure,
            samesite="lax",
            path="/",
        )
    return response


def on_site(target: str) -> bool:
    """A path on this site: no scheme or host, and nothing a browser would read as one
    ("//evil", "/\\evil" and "/\tevil" all lead elsewhere in some browser)."""
    if not target.startswith("/") or any(c in target for c in "\\\t\r\n"):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc and not target.startswith("//")


@router.get("/lang/{code}", dependencies=[public()])
def switch_language(code: str, next: str = "/") -> Response:
    """Remember the chosen language for a year and go back to the page the reader was on."""
    if code not in i18n.LANGUAGES:
        code = i18n.DEFAULT_LANGUAGE
    # Only paths on this site: never an open redirect to another one.
    target = next if on_site(next) else "/"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        i18n.LANG_COOKIE, code, max_age=365 * 86400, samesite="lax", path="/", httponly=True
    )
    return response


@router.post("/logout", dependencies=[requires_web(Permission.AUTHENTICATED)])
def logout(
    ctx: Ctx,
    request: Request,
    csrf_token: Annotated[str, Form(alias=csrf.FIELD, max_length=100)],
) -> Response:
    csrf.check(request, csrf_token)
    sessions.end(ctx, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=ctx.settings.cookie_secure, httponly=True
    )
    return response
