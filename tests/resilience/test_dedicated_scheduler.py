"""`gpucenter serve --workers 2`: the scheduler loop runs in a process of its own (so no
pass holds up an API worker), pokes from the workers reach it, a worker takes over if it
dies, and stopping the server leaves no process behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from gpucenter.client import Client
from gpucenter.config import Settings
from gpucenter.persistence.db import migrate
from tests.factories import make_context, seed_centre, wait_until
from tests.resilience.servers import Server


def _children(pid: int) -> list[int]:
    """Child processes of `pid`, oldest first (Linux /proc)."""
    found: list[tuple[int, int]] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append((int(fields[19]), int(entry)))  # (start time, pid)
    return [p for _, p in sorted(found)]


def _nice(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rpartition(")")[2].split()[16])


def _wait_for_warm_workers(db_url: str, workers: int) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:

        def opened() -> int:
            with engine.connect() as conn:
                return int(
                    conn.scalar(
                        text(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    )
                    or 0
                )

        wait_until(lambda: opened() >= workers * 10, timeout=20, step=0.2)
    finally:
        engine.dispose()


def _spawned(pid: int) -> bool:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return b"spawn_main" in fh.read()


def _scheduler_process(server: Server) -> int:
    """The dedicated scheduler: started before uvicorn's workers (after the resource
    tracker that multiprocessing's spawn start method runs first)."""
    assert server.process is not None
    for pid in _children(server.process.pid):
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if b"spawn_main" in fh.read():
                return pid
    raise AssertionError("no scheduler process")


def _setup(db_url: str, tmp_path: Path, *, admin: bool = False) -> tuple[Path, str]:
    migrate(db_url)
    var = tmp_path / "var"
    var.mkdir()
    ctx = make_context(Settings(var_dir=var, database_url=db_url))
    centre = seed_centre(ctx, organisations=1)  # a single-user test server
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()
    return var, centre.admin_token if admin else centre.alice_token


def test_workers_poke_the_dedicated_scheduler_and_leave_nothing_behind(
    db_url: str, tmp_path: Path
) -> None:
    var, token = _setup(db_url, tmp_path)
    # A 60 s tick: only a poke forwarded from the API worker can start the job in time.
    server = Server(
        db_url, var, workers=2, extra_env={"GPUCENTER_SCHEDULER_INTERVAL_S": "60"}
    ).start()
    assert server.process is not None
    serve_pid = server.process.pid
    try:
        scheduler = _scheduler_process(server)
        # Requests get the CPU before passes: the scheduler (and its threads) runs at the
        # `scheduler_nice` default, the API workers as the server.
        workers = [p for p in _children(serve_pid) if p != scheduler and _spawned(p)]
        assert _nice(scheduler) == _nice(serve_pid) + 10
        assert all(
            _nice(int(t)) == _nice(serve_pid) + 10 for t in os.listdir(f"/proc/{scheduler}/task")
        )
        assert workers and all(_nice(p) == _nice(serve_pid) for p in workers)
        if db_url.startswith("postgresql"):  # each worker opened its kept connections at start
            _wait_for_warm_workers(db_url, len(workers))
        with Client(server.url, token) as api:
            ready = httpx.get(server.url + "/readyz", timeout=5).json()
            assert "follower" in str(ready)  # the workers' own loops do not lead
            job = api.submit({"project": "alpha", "command": "sleep 1", "gpus_per_node": 1})
            # Started by the pass the poke caused (its end is seen at a later pass).
            wait_until(lambda: api.job(job["id"])["state"] != "PENDING", timeout=20, step=0.1)
    finally:
        server.stop()
    assert _children(serve_pid) == []
    assert not os.path.exists(f"/proc/{scheduler}") or _zombie_or_gone(scheduler)


def _zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def test_a_worker_takes_over_when_the_scheduler_process_dies(db_url: str, tmp_path: Path) -> None:
    var, token = _setup(db_url, tmp_path)
    server = Server(db_url, var, workers=2, extra_env={"GPUCENTER_SCHEDULER_INTERVAL_S": "1"})
    server.start()
    try:
        os.kill(_scheduler_process(server), signal.SIGKILL)
        with Client(server.url, token) as api:
            job = api.submit({"project": "alpha", "command": "echo hi", "gpus_per_node": 1})
            wait_until(lambda: api.job(job["id"])["state"] == "COMPLETED", timeout=30, step=0.1)
    finally:
        server.stop()


def _cycles(text: str) -> int:
    for line in text.splitlines():
        if line.startswith("gpucenter_cycle_seconds_count "):
            return int(float(line.split()[1]))
    raise AssertionError("no gpucenter_cycle_seconds_count in /metrics")


def test_metrics_show_the_scheduler_processs_cycles_from_every_worker(
    db_url: str, tmp_path: Path
) -> None:
    """The process answering /metrics is never the dedicated scheduler: its cycle counts
    come through the files the scheduler publishes beside its state."""
    var, token = _setup(db_url, tmp_path, admin=True)
    server = Server(db_url, var, workers=2, extra_env={"GPUCENTER_SCHEDULER_INTERVAL_S": "0.2"})
    server.start()
    auth = {"Authorization": f"Bearer {token}"}
    try:
        seen: list[int] = []

        def counted() -> bool:
            resp = httpx.get(server.url + "/metrics", headers=auth, timeout=5)
            assert resp.status_code == 200, resp.text
            seen.append(_cycles(resp.text))
            return seen[-1] > 0

        wait_until(counted, timeout=30, step=0.5)
        wait_until(lambda: counted() and seen[-1] > seen[0], timeout=30, step=0.5)
    finally:
        server.stop()
