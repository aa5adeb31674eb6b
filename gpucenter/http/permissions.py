"""Every route declares the permission it needs with `requires(...)` (or `public(...)`).

The declaration is a FastAPI dependency that checks the caller with `auth.permissions.grants`
and carries the permission as an attribute, so a test can walk the app and prove that no
route is public by accident.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends

from gpucenter.auth.permissions import Caller, Permission, grants
from gpucenter.domain.errors import PermissionDenied
from gpucenter.domain.messages import msg
from gpucenter.http.deps import CurrentCaller, WebCaller

PERMISSION_ATTR = "gpucenter_permission"


def requires(permission: Permission) -> Any:
    """A dependency that authenticates the caller and checks `permission`."""

    async def check(caller: CurrentCaller) -> Caller:  # async: no thread hop for a pure check
        return check_permission(caller, permission)

    setattr(check, PERMISSION_ATTR, permission)
    return Depends(check)


def check_permission(caller: Caller, permission: Permission) -> Caller:
    """`caller` if it holds `permission`, else PermissionDenied (also used by the raw-ASGI
    submission path, which declares JOBS_SUBMIT through the route it stands in for)."""
    if not grants(caller, permission):
        raise PermissionDenied.of(msg("error.needs_permission", permission=repr(permission.value)))
    return caller


def requires_web(permission: Permission) -> Any:
    """`requires` for browser pages: the caller comes from the session cookie."""

    def check_web(caller: WebCaller) -> Caller:
        if not grants(caller, permission):
            raise PermissionDenied.of(
                msg("error.needs_permission", permission=repr(permission.value))
            )
        return caller

    setattr(check_web, PERMISSION_ATTR, permission)
    return Depends(check_web)


def public(permission: Permission = Permission.PUBLIC) -> Any:
    """A route anyone may call (health, sign-in): declared, so that it is public on purpose."""
    if permission not in (Permission.PUBLIC, Permission.SIGN_IN):
        raise ValueError("public() is only for PUBLIC or SIGN_IN")

    def open_route() -> None:
        return None

    setattr(open_route, PERMISSION_ATTR, permission)
    return Depends(open_route)


def declared_permission(route: Any) -> Permission | None:
    """The permission an APIRoute declared, or None."""
    for dep in route.dependant.dependencies:
        found = getattr(dep.call, PERMISSION_ATTR, None)
        if found is not None:
            return Permission(found)
    return None


def iter_api_routes(routes: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(path, route) for every APIRoute, looking inside included routers.

    Newer FastAPI keeps included routers as wrapper objects rather than copying their
    routes into the app, so the walk follows `original_router` where it finds one.
    """
    found: list[tuple[str, Any]] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            context = getattr(route, "include_context", None)
            extra = getattr(context, "prefix", "") or ""
            found.extend(iter_api_routes(inner.routes, prefix + extra))
        elif hasattr(route, "dependant"):
            found.append((prefix + route.path, route))
    return found
