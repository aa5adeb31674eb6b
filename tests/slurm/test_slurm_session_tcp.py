"""An interactive session on a Slurm site whose nodes are other machines (``sessions_over_tcp``,
forced here on one machine): JupyterLab, started by sbatch as gcalice, listens on TCP with TLS
under a certificate it made at start and publishes its address file; the portal's proxy
reaches it over TLS pinned to that certificate (a notebook API call, a kernel's WebSocket
channel running a cell), another tenant gets 404, and stopping it charges like any job.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from gpucenter.app import create_app
from gpucenter.domain.errors import Conflict
from gpucenter.domain.jobs import JobState
from gpucenter.domain.sessions import JUPYTERLAB, address_name
from gpucenter.http.deps import SESSION_COOKIE
from gpucenter.services.identity import sessions as signins
from gpucenter.services.scheduling.cycle import run_pass
from gpucenter.services.sessions import manage as sessions
from gpucenter.services.sessions.endpoint import open_endpoint
from gpucenter.services.wiring import make_slurm_dispatcher
from tests.slurm.conftest import (
    SlurmWorld,
    project,
    run_until,
    stop_session_and_see_it_charged,
    wait_for,
)
from tests.slurm.test_slurm_session import _python


def _execute(code: str) -> dict[str, Any]:
    """A Jupyter execute_request on the shell channel (the JSON form of the kernel protocol)."""
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "username": "test",
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        "channel": "shell",
        "buffers": [],
    }


def test_a_session_over_tcp_on_slurm_is_reached_through_pinned_tls(
    slurm_world: SlurmWorld,
) -> None:
    world = slurm_world
    world.ctx.settings.session_python = _python()
    over_tcp = world.settings.model_copy(update={"sessions_over_tcp": True})
    world.ctx.dispatcher = make_slurm_dispatcher(world.ctx.sessions, over_tcp, world.ctx.clock)
    assert world.ctx.dispatcher.capabilities.sessions_over_tcp
    mine = project(world, "s", 100.0, "gcalice")
    project(world, "o", 100.0, "gcbob")
    assert world.sync(), "the first sync creates the accounts"
    alice, bob = world.caller("gcalice"), world.caller("gcbob")
    row = sessions.start(world.ctx, alice, JUPYTERLAB, mine, 1, "10m", "h100")
    try:
        running = run_until(world, row.id, lambda r: r.state == JobState.RUNNING.value)
        assert running.stdout_path
        home = Path(running.stdout_path).parent

        def listening() -> bool:
            run_pass(world.ctx)  # the next poll releases the job gpucenter submitted held
            try:
                endpoint = open_endpoint(world.ctx, alice, row.id)
            except Conflict as exc:
                assert "not listening yet" in str(exc), exc
                return False
            endpoint.close()
            assert endpoint.address is not None, "the proxy uses the address file"
            return True

        wait_for("JupyterLab's address file", listening, 180)
        address = home / address_name(row.id)
        st = os.lstat(address)
        assert stat.S_ISREG(st.st_mode) and home.owner() == "gcalice"
        assert st.st_uid == os.stat(home).st_uid and stat.S_IMODE(st.st_mode) == 0o600
        key = home / f"session-{row.id}.key"
        assert stat.S_IMODE(os.lstat(key).st_mode) == 0o600
        published = json.loads(address.read_text())
        assert published["port"] > 0 and len(published["sha256"]) == 64
        assert not (home / f"session-{row.id}.sock").exists()  # no Unix socket this time

        app = create_app(world.ctx, run_scheduler=False)
        base = f"/sessions/{row.id}/app"
        client = TestClient(app)  # not as a context manager: see test_slurm_session.py

        def status_ok() -> bool:  # the address file comes just before Jupyter listens
            return client.get(f"{base}/api/status").status_code == 200

        client.cookies.set(SESSION_COOKIE, signins.start(world.ctx, alice, "password"))
        wait_for("JupyterLab answers over TLS", status_ok, 60)
        answer = client.get(f"{base}/api/contents")
        assert answer.status_code == 200, answer.text
        assert answer.json()["type"] == "directory"
        kernel = client.post(f"{base}/api/kernels", json={"name": "python3"})
        assert kernel.status_code == 201, kernel.text
        kernel_id = kernel.json()["id"]
        with client.websocket_connect(f"{base}/api/kernels/{kernel_id}/channels") as ws:
            request = _execute("print(6 * 7)")
            ws.send_text(json.dumps(request))
            said = ""
            for _ in range(200):
                message = json.loads(ws.receive_text())
                if message.get("parent_header", {}).get("msg_id") != request["header"]["msg_id"]:
                    continue
                if message["msg_type"] == "stream":
                    said += message["content"]["text"]
                # The reply comes on the shell channel and may overtake the output on
                # iopub; the kernel going idle for this request comes after its output.
                if (
                    message["msg_type"] == "status"
                    and message["content"]["execution_state"] == "idle"
                ):
                    break
            assert said.strip() == "42", said

        intruder = TestClient(app)  # another tenant: as if it did not exist
        intruder.cookies.set(SESSION_COOKIE, signins.start(world.ctx, bob, "password"))
        assert intruder.get(f"{base}/api/status").status_code == 404

        stop_session_and_see_it_charged(world, alice, row.id)
    finally:
        with contextlib.suppress(Conflict):
            sessions.stop(world.ctx, alice, row.id)
