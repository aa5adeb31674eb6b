"""The Python SDK against the app in-process: the same client the CLI uses."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from gpucenter.app import create_app
from gpucenter.client import ApiError, Client
from gpucenter.config import Settings
from gpucenter.services.scheduling.cycle import run_pass
from tests.factories import make_context, seed_centre, wait_until


@pytest.fixture
def sdk(settings: Settings):
    ctx = make_context(settings)
    centre = seed_centre(ctx)
    with TestClient(create_app(ctx, run_scheduler=False)) as http:
        client = Client("http://testserver", centre.alice_token, transport=http._transport)
        yield ctx, client
        client.close()
    ctx.engine.dispose()


def test_sdk_submits_pages_and_reads_logs(sdk) -> None:
    ctx, client = sdk
    ids = [client.submit({"project": "alpha", "command": f"echo {i}"})["id"] for i in range(5)]
    assert [j["id"] for j in client.jobs(limit=3)] == sorted(ids, reverse=True)[:3]
    assert [j["id"] for j in client.jobs(limit=100)] == sorted(ids, reverse=True)

    def done() -> bool:
        run_pass(ctx)
        return all(client.job(i)["state"] == "COMPLETED" for i in ids)

    wait_until(done, timeout=30, step=0.1)
    chunk, offset, finished = client.log_chunk(ids[2], "stdout", 0)
    assert (chunk, offset, finished) == (b"2\n", 2, True)
    assert client.health()["status"] == "ok"


def test_sdk_raises_api_errors_with_the_servers_detail(sdk) -> None:
    _, client = sdk
    with pytest.raises(ApiError) as info:
        client.submit({"project": "alpha", "command": "x", "gpus_per_node": 0})
    assert info.value.status == 422 and "gpus_per_node" in info.value.detail
    with pytest.raises(ApiError) as missing:
        client.job(424242)
    assert missing.value.status == 404


def test_openapi_is_served_and_versioned(sdk) -> None:
    _, client = sdk
    spec = client._http.get("/openapi.json").json()
    paths = set(spec["paths"])
    assert "/api/v1/jobs" in paths and "/api/v1/jobs/{job_id}/events" in paths
    assert all(p.startswith("/api/v1/") or p in ("/healthz", "/readyz", "/metrics") for p in paths)
