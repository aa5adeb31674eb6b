"""The FastAPI application factory: routes, error mapping, and the scheduler loop's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gpucenter import __version__
from gpucenter.api import errors
from gpucenter.api.routes_jobs import router as jobs_router
from gpucenter.api.routes_misc import router as misc_router
from gpucenter.api.routes_ops import router as ops_router
from gpucenter.api.routes_programmes import router as programmes_router
from gpucenter.services.context import AppContext
from gpucenter.services.loop import SchedulerLoop
from gpucenter.services.site_registry import ensure_site
from gpucenter.web.pages import router as web_router


def create_app(ctx: AppContext, *, run_scheduler: bool | None = None) -> FastAPI:
    """Build the app around `ctx`. The scheduler loop runs inside it unless told otherwise."""
    scheduler_on = ctx.settings.scheduler_enabled if run_scheduler is None else run_scheduler

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ensure_site(ctx)
        loop: SchedulerLoop | None = None
        if scheduler_on:
            loop = SchedulerLoop(ctx, ctx.settings.scheduler_interval_s)
            app.state.loop = loop
            loop.start()
        try:
            yield
        finally:
            if loop is not None:
                loop.stop()  # running jobs stay up; the next leader re-adopts them
            else:
                ctx.dispatcher.shutdown()

    app = FastAPI(
        title="gpucenter",
        version=__version__,
        description="Control plane of a national AI computing centre.",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.loop = None
    errors.install(app)
    app.include_router(misc_router)
    app.include_router(ops_router)
    app.include_router(jobs_router)
    app.include_router(programmes_router)
    app.include_router(web_router)
    return app
