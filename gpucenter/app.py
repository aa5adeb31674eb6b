"""The FastAPI application factory: routes, error mapping, and the scheduler loop's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from gpucenter import __version__
from gpucenter.api.fast_submit import FastSubmit, SubmitPool
from gpucenter.api.routes_accounting import router as accounting_router
from gpucenter.api.routes_admin import router as admin_router
from gpucenter.api.routes_auth import router as auth_router
from gpucenter.api.routes_awards import router as awards_router
from gpucenter.api.routes_jobs import router as jobs_router
from gpucenter.api.routes_misc import router as misc_router
from gpucenter.api.routes_ops import router as ops_router
from gpucenter.api.routes_programmes import router as programmes_router
from gpucenter.http import errors
from gpucenter.http.plain_text import refuse_control_characters
from gpucenter.http.request_ids import RequestIdMiddleware
from gpucenter.http.security import SecurityMiddleware
from gpucenter.services.context import AppContext
from gpucenter.services.identity.ratelimit import SignInGuard
from gpucenter.services.scheduling.loop import SchedulerLoop
from gpucenter.services.warmup import warm_up
from gpucenter.services.wiring import ensure_site
from gpucenter.web import STATIC_DIR
from gpucenter.web import errors as web_errors
from gpucenter.web.admin_pages import router as web_admin_router
from gpucenter.web.apply_pages import router as web_apply_router
from gpucenter.web.award_manage_pages import router as web_award_manage_router
from gpucenter.web.award_pages import router as web_awards_router
from gpucenter.web.job_events import router as web_job_events_router
from gpucenter.web.job_pages import router as web_jobs_router
from gpucenter.web.manage_pages import router as web_manage_router
from gpucenter.web.ops_pages import router as web_ops_router
from gpucenter.web.pages import router as web_router
from gpucenter.web.project_pages import router as web_projects_router
from gpucenter.web.report_pages import router as web_reports_router
from gpucenter.web.review_pages import router as web_review_router
from gpucenter.web.session_pages import router as web_sessions_router
from gpucenter.web.session_proxy import router as web_session_proxy_router
from gpucenter.web.sso import router as sso_router


def create_app(
    ctx: AppContext, *, run_scheduler: bool | None = None, warm: bool = False
) -> FastAPI:
    """Build the app around `ctx`. The scheduler loop runs inside it unless told otherwise.
    With `warm` (the server's entry points; a test process builds many apps), the database
    connections are opened before the first request (services/warmup.py)."""
    scheduler_on = ctx.settings.scheduler_enabled if run_scheduler is None else run_scheduler

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ensure_site(ctx)
        app.state.submit_pool = SubmitPool.for_context(ctx)
        if app.state.submit_pool is not None:
            await app.state.submit_pool.open()  # bound to this (the serving) loop
        if warm:
            await anyio.to_thread.run_sync(warm_up, ctx)
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
            if app.state.submit_pool is not None:
                await app.state.submit_pool.close()

    app = FastAPI(
        title="gpucenter",
        version=__version__,
        description="Control plane of a national AI computing centre.",
        lifespan=lifespan,
        dependencies=[Depends(refuse_control_characters)],
    )
    app.state.ctx = ctx
    app.state.loop = None
    app.state.submit_pool = None
    errors.install(app)
    web_errors.install(app)
    _install_security(app, ctx)
    app.include_router(misc_router)
    app.include_router(ops_router)
    app.include_router(jobs_router)
    app.include_router(programmes_router)
    app.include_router(awards_router)
    app.include_router(web_router)
    app.include_router(auth_router)
    app.include_router(admin_router)
    app.include_router(sso_router)
    app.include_router(accounting_router)
    app.include_router(web_jobs_router)
    app.include_router(web_sessions_router)
    app.include_router(web_session_proxy_router)
    app.include_router(web_job_events_router)
    app.include_router(web_projects_router)
    app.include_router(web_ops_router)
    app.include_router(web_reports_router)
    app.include_router(web_apply_router)
    app.include_router(web_review_router)
    app.include_router(web_manage_router)
    app.include_router(web_awards_router)
    app.include_router(web_award_manage_router)
    app.include_router(web_admin_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def app_from_settings() -> FastAPI:
    """The app of one worker process of `gpucenter serve --workers N`: each builds its own
    context (engine, dispatcher); the leader lock makes exactly one run the scheduler."""
    from gpucenter.config import get_settings
    from gpucenter.logs import configure_json_logging
    from gpucenter.services.wiring import build_context

    configure_json_logging()
    app = create_app(build_context(get_settings()), warm=True)
    freeze_startup_heap()
    return app


def freeze_startup_heap() -> None:
    """Move everything built at start-up (modules, the app, SQLAlchemy's metadata: ~200,000
    objects) out of the cyclic garbage collector's reach. A full collection otherwise walks
    them all, 100-170 ms on the 2-core reference machine, and every request the process
    holds meanwhile waits that long: the largest part of p99 under a submission storm.
    Called by the server entry points only (a test process builds many apps)."""
    import gc

    gc.collect()
    gc.freeze()


def _install_security(app: FastAPI, ctx: AppContext) -> None:
    """The sign-in guard, single sign-on (when configured) and the hardening middleware."""
    settings = ctx.settings
    # Its state is in the database: every worker process shares the same limits.
    app.state.guard = SignInGuard(
        ctx.sessions,
        lambda: ctx.clock.now(),  # read each time: tests swap the clock
        max_failures=settings.signin_max_failures,
        lockout_s=settings.signin_lockout_s,
        lockout_max_s=settings.signin_lockout_max_s,
        user_max_failures=settings.signin_user_max_failures,
        user_window_s=settings.signin_user_window_s,
        rate_per_minute=settings.signin_rate_per_minute,
    )
    app.state.oauth = None
    # Innermost: job submissions get the request id and hardening like every route.
    app.add_middleware(FastSubmit)
    if settings.oidc_issuer:
        import secrets

        from starlette.middleware.sessions import SessionMiddleware

        from gpucenter.web.sso import make_oauth

        app.state.oauth = make_oauth(settings)
        # Holds only the in-flight state, nonce and PKCE verifier, for ten minutes.
        app.add_middleware(
            SessionMiddleware,
            secret_key=secrets.token_urlsafe(32),
            session_cookie="gpc_sso",
            max_age=600,
            same_site="lax",
            https_only=settings.cookie_secure,
        )
    app.add_middleware(SecurityMiddleware)
    app.add_middleware(RequestIdMiddleware)  # outermost: every response and log has an id
