"""A seeded centre behind the app, reached over https://testserver so that Secure cookies
travel as they would in a browser."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.services.context import AppContext
from tests.factories import Centre, make_context, seed_centre


@dataclass
class Env:
    ctx: AppContext
    centre: Centre
    client: TestClient


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def env(settings: Settings) -> Iterator[Env]:
    ctx = make_context(settings)
    centre = seed_centre(ctx)
    with TestClient(create_app(ctx, run_scheduler=False), base_url="https://testserver") as c:
        yield Env(ctx, centre, c)
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()
