"""A server process's warm-up before its first request (services/warmup.py): the engine's
kept connections are open and the token resolution's statements have run on each, so that
the first burst of distinct tokens opens no connection; a database that cannot be reached
makes the warm-up log, not fail the start."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.pool import QueuePool

from gpucenter.config import Settings
from gpucenter.persistence.db import make_engine, session_factory
from gpucenter.services.identity.signin import resolve_token
from gpucenter.services.warmup import warm_up
from tests.factories import make_context, seed_centre


def test_the_kept_connections_are_open_before_the_first_request(settings: Settings) -> None:
    ctx = make_context(settings)
    try:
        centre = seed_centre(ctx)
        ctx.engine.dispose()  # as a fresh worker: no connection yet
        opened: list[Any] = []
        event.listen(ctx.engine, "connect", lambda *_: opened.append(1))
        pool = ctx.engine.pool
        kept = pool.size() if isinstance(pool, QueuePool) else 1
        assert warm_up(ctx) == kept
        assert len(opened) == kept
        if isinstance(pool, QueuePool):
            assert pool.checkedin() == kept
        for token in (centre.alice_token, centre.bob_token, centre.admin_token):
            resolve_token(ctx, token)
        assert len(opened) == kept, "a resolution after the warm-up opened a connection"
    finally:
        ctx.dispatcher.shutdown()
        ctx.engine.dispose()


def test_an_unreachable_database_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    ctx = SimpleNamespace(engine=engine, sessions=session_factory(engine))
    with caplog.at_level(logging.WARNING, logger="gpucenter.services.warmup"):
        assert warm_up(ctx) == 1  # type: ignore[arg-type]
    assert "warm-up at start failed" in caplog.text
    engine.dispose()
