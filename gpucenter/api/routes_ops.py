"""Operations: a readiness check for load balancers and operators."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gpucenter.http.deps import Ctx
from gpucenter.http.permissions import public
from gpucenter.services.ops.readiness import check_readiness

router = APIRouter(tags=["health"])


@router.get("/readyz", dependencies=[public()])
def ready(ctx: Ctx, request: Request) -> JSONResponse:
    """200 when the server can work; 503 with the checks that fail otherwise."""
    loop = getattr(request.app.state, "loop", None)
    if loop is None:
        role = "disabled"
    elif not loop.running:
        role = "stopped"
    else:
        role = "leader" if loop.is_leader else "follower (another server schedules)"
    checks = check_readiness(ctx, role)
    ok = all(c.ok for c in checks)
    body = {
        "ready": ok,
        "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
    }
    if not ok:
        body |= {
            "type": "about:blank",
            "title": "Not ready",
            "status": 503,
            "detail": "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok),
        }
    return JSONResponse(
        body,
        status_code=200 if ok else 503,
        media_type="application/json" if ok else "application/problem+json",
    )
