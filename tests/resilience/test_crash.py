"""kill -9 during a submission storm: every acknowledged submission exists exactly once,
retries with the same Idempotency-Key never make a second job, and nothing is charged twice."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import func, select

from gpucenter.config import Settings
from gpucenter.persistence.db import make_engine, migrate, session_factory
from gpucenter.persistence.tables import JobRow, LedgerEntryRow
from tests.factories import make_context, seed_centre, wait_until
from tests.resilience.servers import Server

CLIENTS = 6
PER_CLIENT = 40


def test_kill_9_mid_storm_loses_and_doubles_nothing(db_url: str, tmp_path: Path) -> None:
    migrate(db_url)
    var = tmp_path / "var"
    var.mkdir()
    ctx = make_context(Settings(var_dir=var, database_url=db_url))
    centre = seed_centre(ctx, organisations=1)  # a single-user test server
    ctx.engine.dispose()
    server = Server(db_url, var).start()
    headers = {"Authorization": f"Bearer {centre.alice_token}"}
    acknowledged: dict[str, int] = {}
    lock = threading.Lock()
    halfway = threading.Event()

    def body(key: str) -> dict[str, object]:
        return {"project": "alpha", "command": f"echo {key}", "gpus_per_node": 1}

    def client(n: int) -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=5) as http:
            for i in range(PER_CLIENT):
                key = f"storm-{n}-{i}"
                try:
                    resp = http.post(
                        "/api/v1/jobs", json=body(key), headers={"Idempotency-Key": key}
                    )
                except httpx.HTTPError:
                    return  # the server died under us: this submission was not acknowledged
                if resp.status_code == 201:
                    with lock:
                        acknowledged[key] = resp.json()["id"]
                        if len(acknowledged) >= CLIENTS * PER_CLIENT // 3:
                            halfway.set()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    assert halfway.wait(timeout=120), server.log()
    server.kill9()
    for t in threads:
        t.join(timeout=60)
    assert 0 < len(acknowledged) < CLIENTS * PER_CLIENT

    engine = make_engine(db_url)
    sessions = session_factory(engine)
    with sessions.begin() as s:
        keys = Counter(s.scalars(select(JobRow.idempotency_key)).all())
        by_key = dict(s.execute(select(JobRow.idempotency_key, JobRow.id)).tuples().all())
    assert all(count == 1 for count in keys.values())
    for key, job_id in acknowledged.items():
        assert by_key[key] == job_id

    restarted = Server(db_url, var).start()
    try:
        with httpx.Client(base_url=restarted.url, headers=headers, timeout=10) as http:
            for n in range(CLIENTS):  # every client retries everything it ever sent
                for i in range(PER_CLIENT):
                    key = f"storm-{n}-{i}"
                    resp = http.post(
                        "/api/v1/jobs", json=body(key), headers={"Idempotency-Key": key}
                    )
                    assert resp.status_code == 201, resp.text
                    if key in acknowledged:
                        assert resp.json()["id"] == acknowledged[key]

            def all_done() -> bool:
                with sessions.begin() as s:
                    left = s.scalar(
                        select(func.count())
                        .select_from(JobRow)
                        .where(JobRow.state.in_(["PENDING", "RUNNING"]))
                    )
                return left == 0

            wait_until(all_done, timeout=240, step=0.5)
        with sessions.begin() as s:
            total = s.scalar(select(func.count()).select_from(JobRow))
            states = Counter(s.scalars(select(JobRow.state)).all())
            sources = Counter(s.scalars(select(LedgerEntryRow.source)).all())
            charged_jobs = Counter(s.scalars(select(LedgerEntryRow.job_id)).all())
        assert total == CLIENTS * PER_CLIENT  # one job per key, none lost, none doubled
        assert all(c == 1 for c in sources.values())
        assert all(c == 1 for c in charged_jobs.values())  # no job charged twice
        assert states["COMPLETED"] + states["FAILED"] == total, states
    finally:
        restarted.stop()
        engine.dispose()
