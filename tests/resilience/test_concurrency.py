"""200 clients submitting at once across 20 projects on PostgreSQL: no GPU is ever held by two
running jobs, no job is lost or duplicated, and no allocation is overspent."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import func, select

from gpucenter.config import Settings
from gpucenter.persistence.db import make_engine, migrate, session_factory
from gpucenter.persistence.tables import AllocationRow, JobRow, LedgerEntryRow
from gpucenter.services.identity import accounts
from tests.factories import make_context, wait_until
from tests.resilience.servers import Server

CLIENTS = 200
PROJECTS = 20
TIME_LIMIT_S = 5
BUDGET_GPU_HOURS = 15 / 3600  # 15 GPU-seconds: room for three 5-second, 1-GPU jobs


def _seed(url: str, var: Path) -> list[tuple[str, str]]:
    ctx = make_context(Settings(var_dir=var, database_url=url))
    now = datetime.now(tz=UTC)
    tenants = []
    with ctx.sessions.begin() as s:
        for i in range(PROJECTS):
            accounts.create_organisation(s, f"Org {i}", "startup", now)
            user = accounts.create_user(s, f"u{i}", now, organisation=f"Org {i}")
            accounts.create_project(s, f"p{i}", f"Org {i}", now)
            accounts.add_member(s, f"p{i}", f"u{i}")
            accounts.create_allocation(s, f"p{i}", BUDGET_GPU_HOURS, now)
            tenants.append((f"p{i}", user.token))
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()
    return tenants


def test_two_hundred_clients_at_once(postgres_url: str, tmp_path: Path) -> None:
    migrate(postgres_url)
    var = tmp_path / "var"
    var.mkdir()
    tenants = _seed(postgres_url, var)
    server = Server(postgres_url, var).start()
    engine = make_engine(postgres_url)
    sessions = session_factory(engine)
    acknowledged: list[int] = []
    lock = threading.Lock()
    go = threading.Barrier(CLIENTS)
    stop_sampling = threading.Event()
    overlaps: list[str] = []
    samples = 0

    def client(n: int) -> None:
        project, token = tenants[n % PROJECTS]
        body = {
            "project": project,
            "command": "sleep 0.3",
            "gpus_per_node": 1,
            "time_limit_s": TIME_LIMIT_S,
        }
        with httpx.Client(base_url=server.url, timeout=60) as http:
            go.wait()
            resp = http.post(
                "/api/v1/jobs",
                json=body,
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"c{n}"},
            )
        assert resp.status_code == 201, resp.text
        with lock:
            acknowledged.append(resp.json()["id"])

    def sampler() -> None:
        nonlocal samples
        while not stop_sampling.is_set():
            with sessions.begin() as s:
                placements = s.scalars(
                    select(JobRow.placement).where(JobRow.state == "RUNNING")
                ).all()
            held = Counter(
                (part["node"], gpu) for p in placements for part in p or [] for gpu in part["gpus"]
            )
            overlaps.extend(f"{k} held {v} times" for k, v in held.items() if v > 1)
            samples += 1
            stop_sampling.wait(0.05)

    watcher = threading.Thread(target=sampler)
    watcher.start()
    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(acknowledged) == CLIENTS

        def settled() -> bool:
            with sessions.begin() as s:
                running = s.scalar(
                    select(func.count()).select_from(JobRow).where(JobRow.state == "RUNNING")
                )
                startable = s.scalar(
                    select(func.count())
                    .select_from(JobRow)
                    .where(JobRow.state == "PENDING", JobRow.reason != "AllocationExhausted")
                )
            return running == 0 and startable == 0

        wait_until(settled, timeout=180, step=0.5)
    finally:
        stop_sampling.set()
        watcher.join()
        server.stop()
    assert samples > 10 and overlaps == []
    with sessions.begin() as s:
        ids = s.scalars(select(JobRow.id)).all()
        states = Counter(s.scalars(select(JobRow.state)).all())
        charged = dict(
            s.execute(
                select(LedgerEntryRow.allocation_id, func.sum(LedgerEntryRow.gpu_seconds)).group_by(
                    LedgerEntryRow.allocation_id
                )
            )
            .tuples()
            .all()
        )
        granted = dict(
            s.execute(select(AllocationRow.id, AllocationRow.gpu_seconds)).tuples().all()
        )
    engine.dispose()
    assert sorted(ids) == sorted(acknowledged)  # nothing lost, nothing doubled
    assert states["COMPLETED"] > 0 and set(states) <= {"COMPLETED", "PENDING"}
    for allocation_id, used in charged.items():
        assert used <= granted[allocation_id], (allocation_id, used, granted[allocation_id])
