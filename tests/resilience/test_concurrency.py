"""200 clients submitting at once across 20 projects, on PostgreSQL and SQLite: no GPU is
ever held by two running jobs, no job is lost or duplicated, and no allocation is overspent.

Every job runs to its full time limit (it sleeps far longer and is stopped there), so each
start really may use all it asked for: with budgets subtracting only what running jobs had
used so far, every pass started more of them and projects were charged about twice their
grant. Admission now reserves each running job's whole limit.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import func, select

from gpucenter.config import Settings
from gpucenter.persistence.db import make_engine, session_factory
from gpucenter.persistence.tables import AllocationRow, JobRow, LedgerEntryRow
from gpucenter.services.identity import accounts
from tests.factories import make_context, wait_until
from tests.resilience.servers import Server

CLIENTS = 200
PROJECTS = 20
TIME_LIMIT_S = 5
BUDGET_GPU_HOURS = 15 / 3600  # 15 GPU-seconds: room for three 5-second, 1-GPU jobs
ROOM_PER_PROJECT = 3
# Enough GPUs that the budget, not the cluster, is what stops each project's fourth job.
SITE = "site: big\nnodes:\n  - name: big\n    gpus: 64\n    gpu_type: vgpu\n    block: big\n"


def _seed(url: str, var: Path) -> list[tuple[str, str]]:
    ctx = make_context(Settings(var_dir=var, database_url=url))
    now = datetime.now(tz=UTC)
    tenants = []
    with ctx.sessions.begin() as s:
        # One organisation: the test server runs single-user (the mode rule refuses more).
        accounts.create_organisation(s, "Org", "startup", now)
        for i in range(PROJECTS):
            user = accounts.create_user(s, f"u{i}", now, organisation="Org")
            accounts.create_project(s, f"p{i}", "Org", now)
            accounts.add_member(s, f"p{i}", f"u{i}")
            accounts.create_allocation(s, f"p{i}", BUDGET_GPU_HOURS, now)
            tenants.append((f"p{i}", user.token))
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()
    return tenants


def test_two_hundred_clients_at_once(db_url: str, tmp_path: Path) -> None:
    """On both databases (`db_url` is migrated already)."""
    url = db_url
    var = tmp_path / "var"
    var.mkdir()
    tenants = _seed(url, var)
    site = tmp_path / "site.yaml"
    site.write_text(SITE)
    server = Server(url, var, extra_env={"GPUCENTER_SITE_FILE": str(site)}).start()
    engine = make_engine(url)
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
            "command": "sleep 60",
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
            """Nothing runs, and no waiting job fits in what its allocation has left."""
            with sessions.begin() as s:
                if s.scalar(
                    select(func.count()).select_from(JobRow).where(JobRow.state == "RUNNING")
                ):
                    return False
                spent = dict(
                    s.execute(
                        select(
                            LedgerEntryRow.allocation_id, func.sum(LedgerEntryRow.gpu_seconds)
                        ).group_by(LedgerEntryRow.allocation_id)
                    )
                    .tuples()
                    .all()
                )
                left = {
                    a.id: a.gpu_seconds - spent.get(a.id, 0.0)
                    for a in s.scalars(select(AllocationRow))
                }
                waiting = s.execute(
                    select(JobRow.allocation_id, JobRow.time_limit_s).where(
                        JobRow.state == "PENDING"
                    )
                ).all()
            return all(left[a] < limit for a, limit in waiting)

        wait_until(settled, timeout=180, step=0.5)
    finally:
        stop_sampling.set()
        watcher.join()
        server.stop()
    assert samples > 10 and overlaps == []
    with sessions.begin() as s:
        ids = s.scalars(select(JobRow.id)).all()
        states = Counter(s.scalars(select(JobRow.state)).all())
        reasons = set(s.scalars(select(JobRow.reason).where(JobRow.state == "PENDING")).all())
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
    # Each project's grant covered exactly three runs to the limit; the rest wait, saying so.
    assert states == {
        "TIMEOUT": PROJECTS * ROOM_PER_PROJECT,
        "PENDING": CLIENTS - PROJECTS * ROOM_PER_PROJECT,
    }, states
    assert reasons == {"AllocationExhausted"}, reasons
    for allocation_id, used in charged.items():
        assert used <= granted[allocation_id], (allocation_id, used, granted[allocation_id])
