"""Sustained job submissions against a real server: throughput, latency, lost, duplicated.

Starts its own `gpucenter serve` on 127.0.0.1 against GPUCENTER_DATABASE_URL (a fresh
PostgreSQL database is made when the URL names a server; otherwise a temporary SQLite file),
seeds one organisation, user and project per tenant, then offers submissions at a fixed rate
(open loop) from a bounded number of client connections for a bounded time. Every request
carries an Idempotency-Key; afterwards the database is checked for lost (acknowledged but
missing) and duplicated (more than one job per key) submissions. Traffic goes to 127.0.0.1 only.

    .venv/bin/python bench/submit_load.py --seconds 60 --rate 500

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
from pathlib import Path

import httpx
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine.url import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpucenter.config import Settings  # noqa: E402
from gpucenter.persistence.db import migrate  # noqa: E402
from gpucenter.persistence.tables import JobRow  # noqa: E402
from tests.factories import make_context  # noqa: E402
from tests.resilience.servers import Server  # noqa: E402


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

    from gpucenter.services import accounts

    ctx = make_context(Settings(var_dir=var, database_url=url))
    now = datetime.now(tz=UTC)
    found: list[tuple[str, str]] = []
    with ctx.sessions.begin() as s:
        for i in range(tenants):
            accounts.create_organisation(s, f"Org {i}", "university", now)
            user = accounts.create_user(s, f"user{i}", now, organisation=f"Org {i}")
            accounts.create_project(s, f"proj{i}", f"Org {i}", now)
            accounts.add_member(s, f"proj{i}", f"user{i}")
            accounts.create_allocation(s, f"proj{i}", 1_000_000, now)
            found.append((f"proj{i}", user.token))
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()
    return found


async def offer_load(
    base_url: str, tenants: list[tuple[str, str]], rate: float, seconds: float, connections: int
) -> tuple[list[float], dict[str, int], int]:
    latencies: list[float] = []
    acknowledged: dict[str, int] = {}
    errors = 0
    total = int(rate * seconds)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    sem = asyncio.Semaphore(connections)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:

        async def one(i: int) -> None:
            nonlocal errors
            project, token = tenants[i % len(tenants)]
            key = f"load-{i}"
            body = {"project": project, "command": "true", "gpus_per_node": 1, "time_limit_s": 60}
            async with sem:
                start = time.perf_counter()
                try:
                    resp = await client.post(
                        "/api/v1/jobs",
                        json=body,
                        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                    )
                except httpx.HTTPError:
                    errors += 1
                    return
                latencies.append(time.perf_counter() - start)
            if resp.status_code == 201:
                acknowledged[key] = resp.json()["id"]
            else:
                errors += 1

        tasks = []
        t0 = time.perf_counter()
        for i in range(total):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return latencies, acknowledged, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=500.0, help="offered submissions per s")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--tenants", type=int, default=20)
    args = parser.parse_args()
    if args.seconds * args.rate > 200_000:
        parser.error("bounded: at most 200,000 requests per run")
    base = os.environ.get("GPUCENTER_DATABASE_URL")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        url, created = fresh_database(base, tmp)
        try:
            migrate(url)
            var = tmp / "var"
            var.mkdir()
            tenants = seed(url, var, args.tenants)
            server = Server(url, var).start()
            try:
                started = time.perf_counter()
                latencies, acked, errors = asyncio.run(
                    offer_load(server.url, tenants, args.rate, args.seconds, args.connections)
                )
                wall = time.perf_counter() - started
            finally:
                server.stop()
            engine = create_engine(url)
            with engine.connect() as conn:
                keys = Counter(
                    conn.execute(
                        select(JobRow.idempotency_key).where(JobRow.idempotency_key.is_not(None))
                    ).scalars()
                )
                ids = dict(conn.execute(select(JobRow.idempotency_key, JobRow.id)).tuples().all())
            engine.dispose()
        finally:
            if created and base:
                drop_database(base, created)
    lost = sum(1 for key, job_id in acked.items() if ids.get(key) != job_id)
    duplicated = sum(count - 1 for count in keys.values() if count > 1)
    ms = sorted(x * 1000 for x in latencies)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(p * len(ms)))] if ms else float("nan")

    print(
        json.dumps(
            {
                "database": make_url(url).get_backend_name(),
                "offered_per_s": args.rate,
                "seconds": args.seconds,
                "requests": len(latencies) + errors,
                "acknowledged": len(acked),
                "errors": errors,
                "submits_per_s": round(len(acked) / wall, 1),
                "p50_ms": round(pct(0.50), 2),
                "p99_ms": round(pct(0.99), 2),
                "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
                "lost": lost,
                "duplicated": duplicated,
            }
        )
    )


if __name__ == "__main__":
    main()
