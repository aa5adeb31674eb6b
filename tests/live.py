"""A real `gpucenter serve` process for tests that talk to the server over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.factories import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(db_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """The test process's environment without its GPUCENTER_* settings, plus a fresh port."""
    port = free_port()
    return {k: v for k, v in os.environ.items() if not k.startswith("GPUCENTER_")} | {
        "GPUCENTER_DATABASE_URL": db_url,
        "GPUCENTER_VAR_DIR": str(var_dir),
        "GPUCENTER_PORT": str(port),
        "GPUCENTER_API_URL": f"http://127.0.0.1:{port}",
        "GPUCENTER_SCHEDULER_INTERVAL_S": "0.2",
        # Jobs as the test's own user (one organisation per test server; the mode rule
        # refuses more). Multi-tenant runs: tests/security/hostile_local.
        "GPUCENTER_ISOLATION": "single_user",
        "COLUMNS": "200",
        **extra,
    }


@contextmanager
def serving(env: dict[str, str]) -> Iterator[str]:
    """Start the server with `env`, yield its base URL once /healthz answers, stop it.

    Its output goes to a file in its state directory (a pipe nobody reads would stall a
    server that logs much), and readiness is waited for with a generous ceiling: a loaded
    CI machine can take tens of seconds to start Python and the app."""
    var = Path(env["GPUCENTER_VAR_DIR"])
    var.mkdir(parents=True, exist_ok=True)
    log_path = var / "server.log"
    log = open(log_path, "ab")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "gpucenter.cli", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    base = env["GPUCENTER_API_URL"]

    def healthy() -> bool:
        try:
            return httpx.get(base + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            assert server.poll() is None, log_path.read_text()[-3000:]
            return False

    try:
        wait_until(healthy, timeout=180, step=0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
