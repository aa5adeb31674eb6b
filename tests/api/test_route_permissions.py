"""Nothing is public by accident: every route declares the permission it needs."""

from __future__ import annotations

from pathlib import Path

from fastapi.routing import APIRoute

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


def test_every_route_declares_a_permission(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'x.db'}")
    from gpucenter.persistence.db import migrate

    migrate(settings.effective_database_url)
    app = create_app(make_context(settings), run_scheduler=False)
    routes = iter_api_routes(app.routes)
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
