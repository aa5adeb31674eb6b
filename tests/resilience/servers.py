"""Real `gpucenter serve` processes for crash and failover tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.factories import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(db_url: str, var_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCENTER_")}
    return env | {
        "GPUCENTER_DATABASE_URL": db_url,
        "GPUCENTER_VAR_DIR": str(var_dir),
        "GPUCENTER_PORT": str(port),
        "GPUCENTER_API_URL": f"http://127.0.0.1:{port}",
        "GPUCENTER_SCHEDULER_INTERVAL_S": "0.2",
        "GPUCENTER_KILL_GRACE_S": "1",
        # Jobs as the test's own user: the servers' data has one organisation (the mode rule
        # refuses single-user with more). Multi-tenant runs: tests/security/hostile_local.
        "GPUCENTER_ISOLATION": "single_user",
    }


@dataclass
class Server:
    db_url: str
    var_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    workers: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        log = open(self.var_dir / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gpucenter.cli", "serve", "--workers", str(self.workers)],
            env=server_env(self.db_url, self.var_dir, self.port) | self.extra_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

        def healthy() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log()
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=180, step=0.2)  # a generous ceiling: loaded CI machines
        return self

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        path = self.var_dir / f"server-{self.port}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""
