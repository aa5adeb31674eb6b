"""The sign-in limits hold across a real `gpucenter serve --workers 2` (issue 17 item 7):
failed sign-ins served by different worker processes add up, so the pair locks after 5,
not after 5 per process. Which worker serves a request is the kernel's choice: the test
keeps connections open, finds which worker accepted each one (Linux /proc), and sends the
failures over both.
"""

from __future__ import annotations

import http.client
import json
import os
from pathlib import Path

from gpucenter.config import Settings
from gpucenter.persistence.db import migrate
from tests.factories import make_context, seed_centre
from tests.resilience.servers import Server

WRONG = {"username": "root", "password": "not-the-password"}
RIGHT = {"username": "root", "password": "root-password"}


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rpartition(")")[2].split()[1])
            except OSError:
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _worker_of(conn: http.client.HTTPConnection, server: Server) -> int:
    """The server process holding the far end of `conn` (the worker that accepted it)."""
    assert conn.sock is not None and server.process is not None
    client_port = conn.sock.getsockname()[1]
    inode = None
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].split(":")[1], 16)
            remote_port = int(fields[2].split(":")[1], 16)
            if local_port == server.port and remote_port == client_port:
                inode = fields[9]
    assert inode is not None, "no server socket for this connection"
    for pid in _descendants(server.process.pid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    raise AssertionError("no server process holds the connection")


def _post(conn: http.client.HTTPConnection, body: dict[str, str], **headers: str) -> int:
    conn.request(
        "POST",
        "/api/v1/auth/token",
        body=json.dumps(body),
        headers={"Content-Type": "application/json", **headers},
    )
    response = conn.getresponse()
    response.read()
    return response.status


def test_failures_on_two_workers_add_up(db_url: str, tmp_path: Path) -> None:
    migrate(db_url)
    var = tmp_path / "var"
    var.mkdir()
    ctx = make_context(Settings(var_dir=var, database_url=db_url))
    seed_centre(ctx)
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()
    server = Server(db_url, var, workers=2).start()
    conns: list[http.client.HTTPConnection] = []
    try:
        # Connections until each worker holds one (kept alive, reused below).
        by_worker: dict[int, http.client.HTTPConnection] = {}
        for _ in range(60):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            conns.append(conn)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            by_worker.setdefault(_worker_of(conn, server), conn)
            if len(by_worker) == 2:
                break
        assert len(by_worker) == 2, "the kernel gave every connection to one worker"

        # Five failures, spread: each goes to the worker that has served fewer so far.
        served: dict[int, int] = dict.fromkeys(by_worker, 0)
        for _ in range(5):
            pid = min(served, key=lambda p: served[p])
            conn = by_worker[pid]
            assert _post(conn, WRONG) == 401, server.log()
            actual = _worker_of(conn, server)  # a dropped keep-alive may have moved it
            served[actual] = served.get(actual, 0) + 1
            by_worker[actual] = conn
        assert len(served) == 2 and max(served.values()) < 5, served  # [2, 3] as a rule

        # Neither worker saw 5, yet the pair is locked: the right password is refused...
        fewest = min(served, key=lambda p: served[p])
        assert _post(by_worker[fewest], RIGHT) == 429
        assert _worker_of(by_worker[fewest], server) == fewest
        # ...from this address only: the owner elsewhere signs in (uvicorn takes the client
        # address from X-Forwarded-For when the request comes from 127.0.0.1).
        owner = {"X-Forwarded-For": "198.51.100.7"}
        assert _post(by_worker[fewest], RIGHT, **owner) == 200
    finally:
        for conn in conns:
            conn.close()
        server.stop()
