"""Sustained job submissions against a real server: throughput, latency, lost, duplicated.

Starts its own `gpucenter serve` on 127.0.0.1 against GPUCENTER_DATABASE_URL (a fresh
PostgreSQL database is made when the URL names a server; otherwise a temporary SQLite file),
seeds one organisation, user and project per tenant, then offers submissions at a fixed rate
(open loop) from a bounded number of client connections for a bounded time. Every request
carries an Idempotency-Key and a job name unique to it. A share of the requests
(`--retry-share`) is sent a second time with the same key, on another connection, while the
first is still in flight (`--retry-after-ms` later: a client that timed out and retried), and
any request unanswered after `--timeout-s` is abandoned and sent again. Afterwards the
database is checked: lost = acknowledged but not there under its name and id; duplicated =
jobs beyond the first with one request's name (however they got there: the Idempotency-Key
is what should prevent them, so they are counted from the rows, not from the keys).
Traffic goes to 127.0.0.1 only.

    .venv/bin/python bench/submit_load.py --seconds 60 --rate 500
    .venv/bin/python bench/submit_load.py --ceiling --seconds 10 --rate 3000   # client alone

The server runs `--workers` API processes (default 2) and, with 2 or more, the scheduler
loop in a process of its own.
p50_ms/p99_ms count from the moment a request was due, so time spent queued in the client
for a free connection counts (no coordinated omission); p99_round_trip_ms counts from the
moment it was written; p99_after_5s_ms leaves out the first 5 s (pools and token caches
filling). The load starts once the server's processes have finished starting (settled_s).
server_cpu_ms_per_submit and postgres_cpu_ms_per_submit are the CPU the server's processes
(scheduler included) and all PostgreSQL processes used during the run, per submission.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine.url import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpucenter.config import Settings  # noqa: E402
from gpucenter.persistence.db import migrate  # noqa: E402
from gpucenter.persistence.tables import JobRow  # noqa: E402
from tests.factories import make_context  # noqa: E402
from tests.resilience.servers import Server, free_port  # noqa: E402


def fresh_database(base: str | None, tmp: Path) -> tuple[str, str | None]:
    if not base or make_url(base).get_backend_name() == "sqlite":
        return f"sqlite:///{tmp / 'bench.db'}", None
    name = f"gpucenter_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(base).set(database=name).render_as_string(hide_password=False), name


def drop_database(base: str, name: str) -> None:
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def seed(url: str, var: Path, tenants: int) -> list[tuple[str, str]]:
    from datetime import UTC, datetime

    from gpucenter.services.identity import accounts

    ctx = make_context(Settings(var_dir=var, database_url=url))
    now = datetime.now(tz=UTC)
    found: list[tuple[str, str]] = []
    # One organisation: the server runs single-user (as the benchmark's own user, like
    # `make run`), which the mode rule allows with one organisation only; with more, the
    # local site starts nothing and every job waits (issue 17), which is not the load this
    # measures. Each tenant is a user with a project of its own.
    with ctx.sessions.begin() as s:
        accounts.create_organisation(s, "Org", "university", now)
        for i in range(tenants):
            user = accounts.create_user(s, f"user{i}", now, organisation="Org")
            accounts.create_project(s, f"proj{i}", "Org", now)
            accounts.add_member(s, f"proj{i}", f"user{i}")
            accounts.create_allocation(s, f"proj{i}", 1_000_000, now)
            found.append((f"proj{i}", user.token))
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()
    return found


@dataclass
class Load:
    """What the load generator saw: per-request latencies and the acknowledged jobs."""

    from_schedule: list[float] = field(default_factory=list)  # includes waiting for a socket
    due: list[float] = field(default_factory=list)  # when each was due, s from the start
    round_trip: list[float] = field(default_factory=list)  # request written -> response read
    acknowledged: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    client_cpu_s: float = 0.0
    retries: int = 0  # extra sends of a request with the same key
    timeouts: int = 0  # requests abandoned after --timeout-s and sent again
    disagreements: int = 0  # two answers for one key that named different jobs


# `--env-vars N`: each request also carries N environment variables (secrets, sealed at rest
# by the server: issue 17), to measure what sealing costs. 0 (the default): no env.
_ENV: dict[str, str] = {}


def _request(host: str, port: int, project: str, token: str, key: str) -> bytes:
    fields: dict[str, Any] = {
        "project": project,
        "command": "true",
        "gpus_per_node": 1,
        "time_limit_s": 60,
        "name": key,  # the request's own mark: duplicates are counted by it
    }
    if _ENV:
        fields["env"] = _ENV
    body = json.dumps(fields).encode()
    head = (
        f"POST /api/v1/jobs HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nIdempotency-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    body = await reader.readexactly(length) if length else b""
    return status, body, not close


@dataclass(frozen=True, slots=True)
class Retries:
    """How the client retries: a share of requests sent twice at once, and a timeout."""

    share: float = 0.0
    after_s: float = 0.01
    timeout_s: float = 10.0


async def offer_load(
    host: str,
    port: int,
    tenants: list[tuple[str, str]],
    rate: float,
    seconds: float,
    connections: int,
    retries: Retries | None = None,
) -> Load:
    """Open loop: request i is due at t0 + i/rate whatever happened to the earlier ones.

    The client is raw HTTP/1.1 on keep-alive asyncio streams (no HTTP library): httpx costs
    more CPU per request than the server's own work on this 2-core machine. Latency is
    counted from the moment a request was due (so time spent waiting for a free connection
    counts: no coordinated omission) and, separately, from when it was written. Retries
    (same key, another connection) go ahead of new requests; only first sends are timed."""
    retries = retries or Retries()
    load = Load()
    total = int(rate * seconds)
    due: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    again: asyncio.Queue[int] = asyncio.Queue()
    outstanding = 0  # retries scheduled or queued, not yet answered
    every = round(1 / retries.share) if retries.share > 0 else 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    loop = asyncio.get_running_loop()

    def schedule_retry(i: int, delay: float) -> None:
        nonlocal outstanding
        outstanding += 1
        load.retries += 1
        loop.call_later(delay, again.put_nowait, i)

    async def producer() -> None:
        i = 0
        while i < total:
            now = time.perf_counter()
            while i < total and t0 + i / rate <= now:
                due.put_nowait((i, t0 + i / rate))
                if every and i % every == every // 2:
                    schedule_retry(i, retries.after_s)  # sent again while in flight
                i += 1
            await asyncio.sleep(0.001)
        while outstanding:
            await asyncio.sleep(0.01)
        for _ in range(connections):
            due.put_nowait(None)

    def record(i: int, status: int, body: bytes) -> None:
        key = f"load-{i}"
        if status not in (200, 201):
            load.errors += 1
            return
        job_id = json.loads(body)["id"]
        if load.acknowledged.setdefault(key, job_id) != job_id:
            load.disagreements += 1

    async def next_item() -> tuple[int, float | None] | None:
        if not again.empty():
            return again.get_nowait(), None
        getting = asyncio.ensure_future(due.get())
        retrying = asyncio.ensure_future(again.get())
        done, pending = await asyncio.wait({getting, retrying}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if retrying in done:
            if getting in done:  # both: put the new one back for another connection
                due.put_nowait(getting.result())
            return retrying.result(), None
        item = getting.result()
        return None if item is None else (item[0], item[1])

    async def connection() -> None:
        nonlocal outstanding
        reader, writer = await asyncio.open_connection(host, port)
        while True:
            item = await next_item()
            if item is None:  # no new requests left; retries may still come
                due.put_nowait(None)
                if not outstanding:
                    break
                try:
                    item = (await asyncio.wait_for(again.get(), 0.05), None)
                except TimeoutError:
                    continue
            i, scheduled = item
            project, token = tenants[i % len(tenants)]
            sent = time.perf_counter()
            try:
                writer.write(_request(host, port, project, token, f"load-{i}"))
                status, body, keep = await asyncio.wait_for(
                    _response(reader), timeout=retries.timeout_s
                )
            except TimeoutError:
                load.timeouts += 1
                schedule_retry(i, 0.0)  # abandoned: sent again with the same key
                keep = False
                status, body = 0, b""
            except (OSError, asyncio.IncompleteReadError, ValueError):
                load.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                if scheduled is None:
                    outstanding -= 1
                continue
            if scheduled is None:
                outstanding -= 1
            if status:
                done = time.perf_counter()
                record(i, status, body)
                if scheduled is not None:
                    load.round_trip.append(done - sent)
                    load.from_schedule.append(done - scheduled)
                    load.due.append(scheduled - t0)
            if not keep:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
        writer.close()

    await asyncio.gather(producer(), *(connection() for _ in range(connections)))
    load.client_cpu_s = time.process_time() - cpu0
    return load


def _trivial_server(port: int, ready: Any) -> None:
    """A fixed 201 answer to every request: the ceiling of the client, not of any server."""
    answer = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n"
    answer += b'{"id": 1}'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    _run(serve())


def _run(coro: Any) -> Any:
    """uvloop where installed (as uvicorn uses it), else the standard loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _cpu_by_group(server_pid: int) -> dict[str, float]:
    """CPU seconds so far of the server's process tree and of all PostgreSQL processes
    (Linux /proc): where the machine's time per submission goes, under shared load."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    postgres = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick
        if comm.startswith("postgres"):
            postgres += cpu
        parents[int(entry)] = int(fields[1])
        used[int(entry)] = cpu
    server = 0.0
    for pid, cpu in used.items():
        p = pid
        while p > 1 and p != server_pid:
            p = parents.get(p, 0)
        if p == server_pid:
            server += cpu
    return {"server": server, "postgres": postgres}


def settle(
    server_pid: int, window_s: float = 1.0, quiet: float = 0.15, limit_s: float = 60.0
) -> float:
    """Wait until the server has finished starting: its processes (uvicorn answers the
    health check from the first worker while the others still import) used under `quiet`
    of a core over `window_s`. Returns the seconds waited."""
    began = time.perf_counter()
    before = _cpu_by_group(server_pid)["server"]
    while time.perf_counter() - began < limit_s:
        time.sleep(window_s)
        now = _cpu_by_group(server_pid)["server"]
        if now - before < quiet * window_s:
            break
        before = now
    return round(time.perf_counter() - began, 1)


def _pct(values: list[float], p: float) -> float:
    ms = sorted(x * 1000 for x in values)
    return round(ms[min(len(ms) - 1, int(p * len(ms)))], 2) if ms else float("nan")


def ceiling(args: argparse.Namespace) -> dict[str, Any]:
    """The load generator against a server that does no work: what the client can offer."""
    import multiprocessing

    port = free_port()
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=_trivial_server, args=(port, ready), daemon=True)
    proc.start()
    try:
        ready.wait(30)
        started = time.perf_counter()
        load = _run(
            offer_load("127.0.0.1", port, [("p", "t")], args.rate, args.seconds, args.connections)
        )
        wall = time.perf_counter() - started
    finally:
        proc.terminate()
    return {
        "mode": "client ceiling (trivial server)",
        "offered_per_s": args.rate,
        "requests_per_s": round(len(load.acknowledged) / wall, 1),
        "p50_ms": _pct(load.from_schedule, 0.5),
        "p99_ms": _pct(load.from_schedule, 0.99),
        "client_cpu_per_request_us": round(
            load.client_cpu_s / max(1, len(load.round_trip)) * 1e6, 1
        ),
        "errors": load.errors,
        "load_avg": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=500.0, help="offered submissions per s")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument(
        "--no-scheduler",
        dest="scheduler",
        action="store_false",
        help="diagnosis: serve the API without the scheduler loop",
    )
    parser.add_argument(
        "--ceiling", action="store_true", help="measure the client alone, against a no-op server"
    )
    parser.add_argument(
        "--retry-share",
        type=float,
        default=0.05,
        help="share of requests sent again with the same key while in flight (0: none)",
    )
    parser.add_argument("--retry-after-ms", type=float, default=10.0)
    parser.add_argument(
        "--timeout-s", type=float, default=10.0, help="abandon and resend after this long"
    )
    parser.add_argument(
        "--latencies-out",
        type=Path,
        help="diagnosis: write each first send's due time, latency and round trip (s) as CSV",
    )
    parser.add_argument(
        "--env-vars", type=int, default=0, help="environment variables per request (sealed)"
    )
    args = parser.parse_args()
    _ENV.update({f"SECRET_{n}": f"hf_{uuid.uuid4().hex}" for n in range(args.env_vars)})
    if args.seconds * args.rate > 200_000:
        parser.error("bounded: at most 200,000 requests per run")
    if args.ceiling:
        print(json.dumps(ceiling(args)))
        return
    base = os.environ.get("GPUCENTER_DATABASE_URL")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        url, created = fresh_database(base, tmp)
        try:
            migrate(url)
            var = tmp / "var"
            var.mkdir()
            tenants = seed(url, var, args.tenants)
            extra = {} if args.scheduler else {"GPUCENTER_SCHEDULER_ENABLED": "false"}
            server = Server(url, var, workers=args.workers, extra_env=extra).start()
            try:
                assert server.process is not None
                settled_s = settle(server.process.pid)
                cpu_before = _cpu_by_group(server.process.pid)
                started = time.perf_counter()
                load = _run(
                    offer_load(
                        "127.0.0.1",
                        server.port,
                        tenants,
                        args.rate,
                        args.seconds,
                        args.connections,
                        Retries(args.retry_share, args.retry_after_ms / 1000, args.timeout_s),
                    )
                )
                wall = time.perf_counter() - started
                cpu_after = _cpu_by_group(server.process.pid)
            finally:
                server.stop()
            engine = create_engine(url)
            with engine.connect() as conn:
                rows = conn.execute(
                    select(JobRow.name, JobRow.id).where(JobRow.name.like("load-%"))
                ).all()
                # Jobs the scheduler started meanwhile: 0 would mean the site refused to
                # run anything, and the load measured is not a working centre's.
                jobs_started = conn.execute(
                    select(func.count()).select_from(JobRow).where(JobRow.runs > 0)
                ).scalar_one()
            names = Counter(name for name, _ in rows)
            ids: dict[str, set[int]] = {}
            for name, job_id in rows:
                ids.setdefault(name, set()).add(job_id)
            engine.dispose()
        finally:
            if created and base:
                drop_database(base, created)
    if args.latencies_out:
        with args.latencies_out.open("w") as out:
            out.write("due_s,latency_s,round_trip_s\n")
            for due, latency, trip in zip(
                load.due, load.from_schedule, load.round_trip, strict=True
            ):
                out.write(f"{due:.4f},{latency:.4f},{trip:.4f}\n")
    acked = load.acknowledged
    lost = sum(1 for key, job_id in acked.items() if job_id not in ids.get(key, set()))
    duplicated = sum(count - 1 for count in names.values() if count > 1)
    print(
        json.dumps(
            {
                "database": make_url(url).get_backend_name(),
                "workers": args.workers,
                "offered_per_s": args.rate,
                "seconds": args.seconds,
                "requests": len(load.round_trip) + load.errors,
                "acknowledged": len(acked),
                "errors": load.errors,
                "wall_s": round(wall, 1),
                "submits_per_s": round(len(acked) / wall, 1),
                "p50_ms": _pct(load.from_schedule, 0.5),
                "p99_ms": _pct(load.from_schedule, 0.99),
                "p99_round_trip_ms": _pct(load.round_trip, 0.99),
                "p99_after_5s_ms": _pct(
                    [x for x, due in zip(load.from_schedule, load.due, strict=True) if due >= 5],
                    0.99,
                ),
                "p99_by_10s_ms": [
                    _pct(
                        [
                            x
                            for x, due in zip(load.from_schedule, load.due, strict=True)
                            if start <= due < start + 10
                        ],
                        0.99,
                    )
                    for start in range(0, int(args.seconds), 10)
                ],
                "p99_first_10s_by_1s_ms": [
                    _pct(
                        [
                            x
                            for x, due in zip(load.from_schedule, load.due, strict=True)
                            if start <= due < start + 1
                        ],
                        0.99,
                    )
                    for start in range(0, min(10, int(args.seconds)))
                ],
                "mean_ms": round(statistics.fmean(load.from_schedule) * 1000, 2)
                if load.from_schedule
                else None,
                "client_cpu_s": round(load.client_cpu_s, 1),
                "server_cpu_ms_per_submit": round(
                    (cpu_after["server"] - cpu_before["server"]) * 1000 / max(1, len(acked)), 2
                ),
                "postgres_cpu_ms_per_submit": round(
                    (cpu_after["postgres"] - cpu_before["postgres"]) * 1000 / max(1, len(acked)),
                    2,
                ),
                "scheduler": args.scheduler,
                "settled_s": settled_s,
                "jobs_started": jobs_started,
                "lost": lost,
                "duplicated": duplicated,
                "retried": load.retries,
                "timed_out": load.timeouts,
                "answers_disagreeing": load.disagreements,
                "retry_share": args.retry_share,
                "load_avg": os.getloadavg(),
            }
        )
    )


if __name__ == "__main__":
    main()
