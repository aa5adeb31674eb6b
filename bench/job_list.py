"""Job list latency for a project with 100,000 jobs, through the REST list endpoint.

Makes a fresh PostgreSQL database (GPUCENTER_DATABASE_URL names the server; dropped
afterwards), seeds one project with --jobs jobs (states as a busy project has them: mostly
ended, a few pending and running) plus --noise jobs of other projects, starts a real
`gpucenter serve`, and asks `GET /api/v1/jobs` with keyset pagination as a member would:
the first page, deep pages (a cursor near the oldest job), and pages filtered by one or two
states, with and without the project filter. Requests are sequential on one keep-alive
connection; latency is the client's round trip.

    GPUCENTER_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/job_list.py

The last line printed is one JSON object: p50_ms/p99_ms over the 50-row pages (the API's
default page size, which the target is about), the p99 with 500-row pages included, and
p50/p99 per kind.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.submit_load import drop_database, fresh_database, seed  # noqa: E402
from gpucenter.persistence.db import migrate  # noqa: E402
from gpucenter.services.jobs.manage import encode_cursor  # noqa: E402
from tests.resilience.servers import Server  # noqa: E402

# Share of the project's jobs in each state, in a fixed repeating pattern of 1,000 ids.
STATES = (("COMPLETED", 900), ("FAILED", 50), ("CANCELLED", 30), ("PENDING", 15), ("RUNNING", 5))


def seed_jobs(url: str, project: str, jobs: int, noise: int) -> tuple[int, int]:
    """Insert the jobs with one INSERT ... SELECT over generate_series; returns the id range
    of the project's jobs. Noise jobs (other projects) are interleaved with them."""
    cases = []
    upto = 0
    for state, share in STATES:
        upto += share
        cases.append(f"WHEN g % 1000 < {upto} THEN '{state}'")
    state_sql = "CASE " + " ".join(cases) + " END"
    engine = create_engine(url)
    with engine.begin() as conn:
        pid, uid, aid, sid = conn.execute(
            text(
                "SELECT p.id, m.user_id, a.id, (SELECT id FROM sites LIMIT 1) FROM projects p "
                "JOIN memberships m ON m.project_id = p.id "
                "JOIN allocations a ON a.project_id = p.id WHERE p.name = :name"
            ),
            {"name": project},
        ).one()
        others = [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT p.id, m.user_id, a.id FROM projects p "
                    "JOIN memberships m ON m.project_id = p.id "
                    "JOIN allocations a ON a.project_id = p.id WHERE p.name <> :name"
                ),
                {"name": project},
            )
        ]
        total = jobs + noise
        every = max(1, total // max(1, noise)) if noise else total + 1
        # Row g belongs to the project unless it is a noise row (every `every`-th row).
        conn.execute(
            text(
                "INSERT INTO jobs (project_id, allocation_id, user_id, site_id, name, command, "
                "gpu_type, gpus_per_node, nodes, time_limit_s, env, state, reason, "
                "reason_detail, submitted_at, qos, after_ok, runs, borrowed) "
                "SELECT CASE WHEN g % :every = 0 THEN :opid ELSE :pid END, "
                "CASE WHEN g % :every = 0 THEN :oaid ELSE :aid END, "
                "CASE WHEN g % :every = 0 THEN :ouid ELSE :uid END, :sid, 'train', 'true', "
                f"'virtual', 1, 1, 3600, '{{}}', {state_sql}, '', '', "
                "now() - make_interval(secs => :total - g), 'normal', '[]', 0, false "
                "FROM generate_series(1, :total) AS g"
            ),
            {
                "every": every,
                "pid": pid,
                "aid": aid,
                "uid": uid,
                "sid": sid,
                "opid": others[0][0],
                "ouid": others[0][1],
                "oaid": others[0][2],
                "total": total,
            },
        )
        low, high = conn.execute(
            text("SELECT min(id), max(id) FROM jobs WHERE project_id = :pid"), {"pid": pid}
        ).one()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE jobs"))
    engine.dispose()
    return int(low), int(high)


def pct(values: list[float], p: float) -> float:
    ms = sorted(values)
    return round(ms[min(len(ms) - 1, int(p * len(ms)))], 2) if ms else float("nan")


def measure(
    base_url: str, token: str, project: str, low: int, high: int, repeat: int
) -> dict[str, list[float]]:
    deep = encode_cursor(low + (high - low) // 50)  # near the oldest: the last pages
    middle = encode_cursor((low + high) // 2)
    kinds: dict[str, dict[str, Any]] = {
        "first_page": {"project": project},
        "first_page_no_project_filter": {},
        "deep_page": {"project": project, "cursor": deep},
        "middle_page": {"project": project, "cursor": middle},
        "state_running": {"project": project, "state": "RUNNING"},
        "state_running_deep": {"project": project, "state": "RUNNING", "cursor": deep},
        "state_pending_or_running": {"project": project, "state": ["PENDING", "RUNNING"]},
        "state_failed_middle": {"project": project, "state": "FAILED", "cursor": middle},
        "state_completed_limit_500": {"project": project, "state": "COMPLETED", "limit": 500},
    }
    out: dict[str, list[float]] = {k: [] for k in kinds}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        for params in kinds.values():  # warm-up: plans, caches, the token
            http.get("/api/v1/jobs", params=params).raise_for_status()
        for _ in range(repeat):
            for name, params in kinds.items():
                t = time.perf_counter()
                resp = http.get("/api/v1/jobs", params=params)
                out[name].append((time.perf_counter() - t) * 1000)
                resp.raise_for_status()
                assert resp.json()["items"], name
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--noise", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args()
    base = os.environ.get("GPUCENTER_DATABASE_URL")
    if not base or not base.startswith("postgresql"):
        parser.error("set GPUCENTER_DATABASE_URL to a PostgreSQL server")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        url, created = fresh_database(base, tmp)
        assert created is not None
        try:
            migrate(url)
            var = tmp / "var"
            var.mkdir()
            tenants = seed(url, var, 2)
            project, token = tenants[0]
            server = Server(url, var, extra_env={"GPUCENTER_SCHEDULER_ENABLED": "false"})
            server.start()
            try:
                started = time.perf_counter()
                low, high = seed_jobs(url, project, args.jobs, args.noise)
                seeded = time.perf_counter() - started
                times = measure(server.url, token, project, low, high, args.repeat)
            finally:
                server.stop()
        finally:
            drop_database(base, created)
    every = [x for values in times.values() for x in values]
    # The target is for the API's page size (50); 500-row pages are reported on their own.
    default_size = [x for k, values in times.items() if "limit_500" not in k for x in values]
    print(
        json.dumps(
            {
                "jobs_in_project": args.jobs,
                "other_jobs": args.noise,
                "seed_s": round(seeded, 1),
                "requests": len(every),
                "p50_ms": pct(default_size, 0.5),
                "p99_ms": pct(default_size, 0.99),
                "p99_ms_all_kinds_incl_limit_500": pct(every, 0.99),
                "by_kind_p50_p99_ms": {k: [pct(v, 0.5), pct(v, 0.99)] for k, v in times.items()},
                "load_avg": os.getloadavg(),
            }
        )
    )


if __name__ == "__main__":
    main()
