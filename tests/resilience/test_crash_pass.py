"""kill -9 while a scheduling pass holds decisions it has not committed.

The server is started with `GPUCENTER_TEST_PASS_PAUSE_S`, so that every pass with pending
jobs touches `<var>/pass-paused` and then waits before committing. Two long jobs run; an
array of short jobs is acknowledged; the server is killed inside the pass that would start
them. Afterwards: every acknowledged job exists exactly once, the crash changed no job and
no ledger row, the restarted server re-adopts the long jobs (they print their output once:
not restarted), no GPU is ever held by two running jobs, and every run is charged once.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from gpucenter.config import Settings
from gpucenter.persistence.db import make_engine, migrate, session_factory
from gpucenter.persistence.tables import JobRow, LedgerEntryRow
from tests.factories import make_context, seed_centre, wait_until
from tests.resilience.servers import Server

TASKS = 12
PAUSE_S = "3"


def _state(sessions: Any) -> tuple[dict[int, tuple[str, int, str]], tuple[int, float]]:
    """(job id -> (state, runs, placement) for every job, (ledger rows, GPU-seconds))."""
    with sessions.begin() as s:
        jobs = {
            r.id: (r.state, r.runs, repr(r.placement))
            for r in s.execute(select(JobRow.id, JobRow.state, JobRow.runs, JobRow.placement))
        }
        ledger = s.execute(
            select(func.count(), func.coalesce(func.sum(LedgerEntryRow.gpu_seconds), 0.0))
        ).one()
    return jobs, (int(ledger[0]), float(ledger[1]))


def _no_gpu_twice(sessions: Any) -> None:
    with sessions.begin() as s:
        placements = s.scalars(
            select(JobRow.placement).where(JobRow.state == "RUNNING", JobRow.placement.is_not(None))
        ).all()
    held = Counter((p["node"], g) for placement in placements for p in placement for g in p["gpus"])
    assert all(n == 1 for n in held.values()), held


def test_kill_9_inside_a_scheduling_pass(db_url: str, tmp_path: Path) -> None:
    migrate(db_url)
    var = tmp_path / "var"
    var.mkdir()
    ctx = make_context(Settings(var_dir=var, database_url=db_url))
    centre = seed_centre(ctx, organisations=1)  # a single-user test server
    ctx.engine.dispose()
    engine = make_engine(db_url)
    sessions = session_factory(engine)
    marker = var / "pass-paused"
    # The long jobs run until the test creates `release` in their run directories (the
    # only place, besides the system, that a sandboxed job sees).
    long_command = "echo start; while [ ! -e release ]; do sleep 0.1; done; echo end"
    headers = {"Authorization": f"Bearer {centre.alice_token}"}

    server = Server(db_url, var, extra_env={"GPUCENTER_TEST_PASS_PAUSE_S": PAUSE_S}).start()
    restarted: Server | None = None
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
            long_ids = []
            for n in range(2):
                resp = http.post(
                    "/api/v1/jobs",
                    json={
                        "project": "alpha",
                        "command": long_command,
                        "gpus_per_node": 1,
                    },
                    headers={"Idempotency-Key": f"long-{n}"},
                )
                assert resp.status_code == 201, resp.text
                long_ids.append(resp.json()["id"])

            def long_running() -> bool:
                states = [http.get(f"/api/v1/jobs/{i}").json()["state"] for i in long_ids]
                return states == ["RUNNING", "RUNNING"]

            wait_until(long_running, timeout=60, step=0.2)
            marker.unlink(missing_ok=True)
            resp = http.post(
                "/api/v1/jobs",
                json={
                    "project": "alpha",
                    "command": "true",
                    "gpus_per_node": 1,
                    "array": f"0-{TASKS - 1}",
                },
                headers={"Idempotency-Key": "array-of-tasks"},
            )
            assert resp.status_code == 201, resp.text
            acknowledged = set(resp.json()["array_task_ids"]) | set(long_ids)
        # The pass that would start the array is now deciding: kill it before it commits.
        wait_until(marker.exists, timeout=60, step=0.02)
        before, ledger_before = _state(sessions)
        server.kill9()
        after, ledger_after = _state(sessions)
        assert after == before  # the crash wrote nothing
        assert ledger_after == ledger_before
        assert acknowledged <= set(after)
        running = {i for i, (state, _, _) in after.items() if state == "RUNNING"}
        assert running == set(long_ids), (after, long_ids)
        _no_gpu_twice(sessions)

        restarted = Server(db_url, var).start()

        def scheduling_again() -> bool:  # the new leader adopted, then started new work
            jobs, _ = _state(sessions)
            return any(jobs[i][0] != "PENDING" for i in acknowledged - set(long_ids))

        wait_until(scheduling_again, timeout=60, step=0.1)
        adopted, _ = _state(sessions)
        assert all(adopted[i][:2] == ("RUNNING", 1) for i in long_ids), adopted
        for i in long_ids:
            (var / "tenants" / "jobs" / f"job-{i}.run-1" / "release").touch()

        def all_done() -> bool:
            _no_gpu_twice(sessions)
            with sessions.begin() as s:
                left = s.scalar(
                    select(func.count())
                    .select_from(JobRow)
                    .where(JobRow.state.in_(["PENDING", "RUNNING"]))
                )
            return left == 0

        wait_until(all_done, timeout=120, step=0.1)
        with httpx.Client(base_url=restarted.url, headers=headers, timeout=30) as http:
            for job_id in long_ids:
                job = http.get(f"/api/v1/jobs/{job_id}").json()
                assert job["state"] == "COMPLETED", job
                log = http.get(f"/api/v1/jobs/{job_id}/logs").content
                assert log == b"start\nend\n"  # ran once: re-adopted, not restarted
        final, _ = _state(sessions)
        with sessions.begin() as s:
            keys = Counter(s.scalars(select(JobRow.idempotency_key)).all())
            sources = Counter(s.scalars(select(LedgerEntryRow.source)).all())
            charged = Counter(s.scalars(select(LedgerEntryRow.job_id)).all())
        assert all(count == 1 for key, count in keys.items() if key is not None)
        assert acknowledged <= set(final)
        assert all(final[i][1] == 1 for i in long_ids)  # one run each
        assert all(state == "COMPLETED" for state, _, _ in final.values()), final
        assert all(c == 1 for c in sources.values())
        assert all(c == 1 for c in charged.values())  # every run charged once
        assert set(long_ids) <= set(charged)
    finally:
        server.stop()
        if restarted is not None:
            restarted.stop()
        engine.dispose()
