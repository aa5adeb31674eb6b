"""Single sign-on with OpenID Connect, through Authlib's Starlette client.

Authlib does the protocol: discovery from the issuer's metadata, the authorisation-code flow
with PKCE, the state check, and the ID token's signature (from the provider's JWKS), issuer,
audience, expiry and nonce. The in-flight state lives in a short-lived signed cookie
(Starlette's SessionMiddleware, installed by the app factory only when SSO is configured).
Which local user the identity is, is `services.oidc`'s decision.
"""

from __future__ import annotations

from typing import Any

import httpx
from authlib.integrations.base_client import OAuthError
from authlib.integrations.starlette_client import OAuth
from fastapi import APIRouter, Request
from fastapi.responses import Response
from joserfc.errors import JoseError

from gpucenter.auth.permissions import Permission
from gpucenter.config import Settings
from gpucenter.domain.errors import NotFound, Unauthenticated
from gpucenter.domain.messages import msg
from gpucenter.http.deps import Ctx, client_address
from gpucenter.http.permissions import public
from gpucenter.services.identity import oidc
from gpucenter.web.pages import page, signed_in

router = APIRouter(include_in_schema=False)
CLIENT = "sso"


def make_oauth(settings: Settings) -> OAuth:
    oauth = OAuth()
    oauth.register(
        name=CLIENT,
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret,
        server_metadata_url=settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256"},
    )
    return oauth


def _client(request: Request) -> Any:
    oauth: OAuth | None = getattr(request.app.state, "oauth", None)
    if oauth is None:
        raise NotFound("page", request.url.path)
    return oauth.create_client(CLIENT)


@router.get("/auth/sso", dependencies=[public(Permission.SIGN_IN)])
async def sso_start(request: Request) -> Response:
    """Send the browser to the provider to sign in."""
    client = _client(request)
    redirect_uri = str(request.url_for("sso_callback"))
    response: Response = await client.authorize_redirect(request, redirect_uri)
    return response


@router.get("/auth/sso/callback", name="sso_callback", dependencies=[public(Permission.SIGN_IN)])
async def sso_callback(request: Request, ctx: Ctx) -> Response:
    """The provider sends the browser back here with a code; exchange it and sign in."""
    client = _client(request)
    try:
        token = await client.authorize_access_token(request)
        claims = token.get("userinfo") or {}
        issuer = str(claims.get("iss", ""))
        if issuer.rstrip("/") != ctx.settings.oidc_issuer.rstrip("/") or not claims.get("sub"):
            raise Unauthenticated.of(msg("error.sso_wrong_issuer"))
        caller = oidc.sign_in(ctx, ctx.settings.oidc_issuer, claims, client_address(request))
    except (OAuthError, JoseError, httpx.HTTPError, ValueError, Unauthenticated) as exc:
        # A bad signature, a wrong nonce or state, an unreachable provider: all one answer.
        message = str(exc) if isinstance(exc, Unauthenticated) else "single sign-on failed"
        return page(request, ctx, "login.html", 401, error=message, sso=True)
    return signed_in(ctx, caller, "oidc")
