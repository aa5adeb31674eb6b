"""An interactive session on a real Slurm site: JupyterLab started as gcalice's Slurm job (by
sbatch --uid, unsandboxed, from a JupyterLab environment every account can run), reached
through the portal's proxy (HTTP and WebSocket) by its owner only, stopped and charged like
any job.

The compute node is this machine, so the session's socket (in gcalice's log directory) is
reachable by the server; across hosts it is not yet (see the README's "Interactive
sessions").
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from gpucenter.app import create_app
from gpucenter.domain.errors import Conflict
from gpucenter.domain.jobs import JobState
from gpucenter.domain.sessions import JUPYTERLAB
from gpucenter.http.deps import SESSION_COOKIE
from gpucenter.services.identity import sessions as signins
from gpucenter.services.scheduling.cycle import run_pass
from gpucenter.services.sessions import manage as sessions
from gpucenter.services.sessions.endpoint import open_endpoint
from tests.slurm.conftest import (
    SlurmWorld,
    project,
    run_until,
    stop_session_and_see_it_charged,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
JUPYTER_ENV = ROOT / "scripts" / "sessions" / "jupyter_env.sh"


def _python() -> str:
    done = subprocess.run(
        ["bash", str(JUPYTER_ENV)], capture_output=True, text=True, timeout=900, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def test_a_jupyterlab_session_on_slurm_is_reached_through_the_proxy(
    slurm_world: SlurmWorld,
) -> None:
    world = slurm_world
    world.ctx.settings.session_python = _python()
    mine = project(world, "s", 100.0, "gcalice")
    project(world, "o", 100.0, "gcbob")
    assert world.sync(), "the first sync creates the accounts"
    alice, bob = world.caller("gcalice"), world.caller("gcbob")
    row = sessions.start(world.ctx, alice, JUPYTERLAB, mine, 1, "10m", "h100")
    try:
        running = run_until(world, row.id, lambda r: r.state == JobState.RUNNING.value)
        assert running.stdout_path and Path(running.stdout_path).parent.owner() == "gcalice"

        def listening() -> bool:
            run_pass(world.ctx)  # the next poll releases the job gpucenter submitted held
            try:
                open_endpoint(world.ctx, alice, row.id).close()
            except Conflict as exc:
                assert "not listening yet" in str(exc), exc
                return False
            return True

        wait_for("JupyterLab's socket", listening, 180)
        app = create_app(world.ctx, run_scheduler=False)
        status = f"/sessions/{row.id}/app/api/status"
        events = f"/sessions/{row.id}/app/api/events/subscribe"
        # Not as a context manager: the app's lifespan would shut this test's dispatcher down
        # at its end (and with it the cancel below).
        client = TestClient(app)
        client.cookies.set(SESSION_COOKIE, signins.start(world.ctx, alice, "password"))
        answer = client.get(status)
        assert answer.status_code == 200, answer.text
        assert "last_activity" in answer.json()
        with client.websocket_connect(events) as ws:  # the owner's WebSocket opens
            ws.close()
        # ... but not from a page of another site, which the browser sends the cookie with.
        evil = {"Origin": "https://evil.example", "Host": "testserver"}
        with pytest.raises(WebSocketDisconnect), client.websocket_connect(events, headers=evil):
            pass
        intruder = TestClient(app)  # another tenant: as if it did not exist
        intruder.cookies.set(SESSION_COOKIE, signins.start(world.ctx, bob, "password"))
        assert intruder.get(status).status_code == 404
        with pytest.raises(WebSocketDisconnect), intruder.websocket_connect(events):
            pass  # the handshake is refused (403) before anything reaches the session

        stop_session_and_see_it_charged(world, alice, row.id)
    finally:
        with contextlib.suppress(Conflict):
            sessions.stop(world.ctx, alice, row.id)
