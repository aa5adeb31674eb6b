"""Nothing is public by accident: every route declares the permission it needs."""

from __future__ import annotations

from pathlib import Path

from fastapi.routing import APIRoute, APIWebSocketRoute

from gpucenter.app import create_app
from gpucenter.auth.permissions import Permission
from gpucenter.config import Settings
from gpucenter.http.permissions import declared_permission, iter_api_routes
from tests.factories import make_context

# Health checks, the ways to sign in and the language switch (it only sets a cookie and
# redirects within the site); nothing else ("/" needs a browser session).
PUBLIC_ON_PURPOSE = {
    "/lang/{code}",
    "/healthz",
    "/readyz",
    "/api/v1/auth/token",
    "/login",
    "/auth/sso",
    "/auth/sso/callback",
}
# WebSocket routes cannot answer a handshake with a dependency's 401/403 page; each resolves
# its caller in the handler and closes the handshake (403) before accepting for anyone else.
WEBSOCKETS_CHECKED_IN_THE_HANDLER = {"/sessions/{job_id}/app/{path:path}"}


def test_every_route_declares_a_permission(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}")
    from gpucenter.persistence.db import migrate

    migrate(settings.effective_database_url)
    app = create_app(make_context(settings), run_scheduler=False)
    found = iter_api_routes(app.routes)
    sockets = {path for path, r in found if isinstance(r, APIWebSocketRoute)}
    assert sockets <= WEBSOCKETS_CHECKED_IN_THE_HANDLER, sockets - WEBSOCKETS_CHECKED_IN_THE_HANDLER
    routes = [(path, r) for path, r in found if not isinstance(r, APIWebSocketRoute)]
    assert len(routes) > 10
    assert all(isinstance(r, APIRoute) for _, r in routes)
    undeclared = [path for path, r in routes if declared_permission(r) is None]
    assert undeclared == []
    public = {
        path
        for path, r in routes
        if declared_permission(r) in (Permission.PUBLIC, Permission.SIGN_IN)
    }
    assert public <= PUBLIC_ON_PURPOSE, public - PUBLIC_ON_PURPOSE


def test_an_undeclared_route_is_caught() -> None:
    from fastapi import APIRouter, FastAPI

    app = FastAPI()
    router = APIRouter(prefix="/api/v1/x")

    @router.get("/leak")
    def leak() -> int:
        return 1

    app.include_router(router)
    (path, route), *_ = iter_api_routes(app.routes)
    assert path == "/api/v1/x/leak" and declared_permission(route) is None
