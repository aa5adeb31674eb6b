"""Benchmark: the monthly report by applicant type over N ledger rows, and ingesting 1M
usage records, on PostgreSQL.

    GPUCENTER_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/postgres \
        .venv/bin/python bench/ledger_report.py --rows 10000000

Creates a fresh database `gpucenter_bench_<random>` next to the one in the URL (which is only
used to connect), migrates it, generates organisations, projects, allocations and jobs, then
N ledger rows with generate_series inside the database (the migration's roll-up trigger folds
them as it would any insert). It times:
- report_s: the service call `usage_report(month, applicant_type)` for one month (median of
  --repeat runs; the first, cold run is reported too), checked against a GROUP BY over the
  raw ledger rows of that month;
- ingest_1m_s: `ingest_usage` of --ingest records (default 1M) in one transaction, through
  the real ingest path (COPY into a temporary table, one INSERT ... ON CONFLICT DO NOTHING).
The database is dropped at the end. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, text
from sqlalchemy.engine.url import make_url

from gpucenter.accounting.report import Dimension
from gpucenter.auth.permissions import Caller
from gpucenter.persistence.db import make_engine, migrate, session_factory
from gpucenter.services.accounting.ledger import UsageCharge, ingest_usage
from gpucenter.services.accounting.reports import usage_report

ADMIN = Caller(user_id=0, username="bench", is_admin=True, project_ids=frozenset())
KINDS = ("university", "startup", "sme", "public_research_institute", "large_enterprise")
TYPES = ("h100", "b200", "a100")
MONTHS = 24  # 2025-01 .. 2026-12
START = datetime(2025, 1, 1, tzinfo=UTC)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--ingest", type=int, default=1_000_000)
    p.add_argument("--orgs", type=int, default=500)
    p.add_argument("--allocations", type=int, default=3_000)
    p.add_argument("--jobs", type=int, default=200_000)
    p.add_argument("--month", default="2026-06")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--keep", action="store_true", help="do not drop the database")
    return p.parse_args()


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


SEED_SQL = [
    """INSERT INTO organisations (id, name, kind, created_at)
       SELECT g, 'org-' || g, (ARRAY{kinds})[1 + g % {nkinds}], now()
       FROM generate_series(1, {orgs}) g""",
    """INSERT INTO users (id, username, display_name, is_admin, created_at)
       VALUES (1, 'bench', '', true, now())""",
    """INSERT INTO projects (id, name, title, organisation_id, created_at)
       SELECT g, 'proj-' || g, '', 1 + g % {orgs}, now() FROM generate_series(1, {allocs}) g""",
    """INSERT INTO allocations (id, project_id, gpu_seconds, starts_at, ends_at, created_at,
       gpu_type, state)
       SELECT g, g, 3600 * 100000, '2025-01-01', '2027-01-01', now(),
              (ARRAY{types})[1 + g % {ntypes}], 'active'
       FROM generate_series(1, {allocs}) g""",
    """INSERT INTO sites (id, name, kind) SELECT g, 'site-' || g, 'slurm'
       FROM generate_series(1, 3) g""",
    """INSERT INTO nodes (site_id, name, gpu_type, gpu_count, block, virtual)
       SELECT 1 + g % 3, 'n' || g, (ARRAY{types})[1 + g % {ntypes}], 8, 'default', false
       FROM generate_series(1, 600) g""",
    """INSERT INTO jobs (id, project_id, allocation_id, user_id, site_id, name, command,
       gpu_type, gpus_per_node, nodes, time_limit_s, env, state, reason, reason_detail,
       submitted_at, started_at, ended_at, qos, after_ok, runs, borrowed)
       SELECT g, 1 + g % {allocs}, 1 + g % {allocs}, 1, 1 + g % 3, '', 'true',
              (ARRAY{types})[1 + (1 + g % {allocs}) % {ntypes}], 8, 1, 3600, '{{}}',
              'COMPLETED', '', '', now(), now(), now(), 'normal', '[]', 1, false
       FROM generate_series(1, {jobs}) g""",
]

LEDGER_SQL = """
INSERT INTO ledger_entries (allocation_id, job_id, source, gpu_type, gpu_seconds, created_at)
SELECT 1 + j % {allocs}, j, 'job:' || g || ':run:1',
       (ARRAY{types})[1 + (1 + j % {allocs}) % {ntypes}],
       (g % 7200) + 60.0,
       timestamptz '2025-01-01 00:00:00+00' + ((g * 2654435761) % ({months} * 30 * 86400))
           * interval '1 second'
FROM (SELECT g, 1 + g % {jobs} AS j FROM generate_series(1, {rows}) g) s
"""

RAW_CHECK_SQL = """
SELECT o.kind, sum(l.gpu_seconds) / 3600.0
FROM ledger_entries l JOIN allocations a ON a.id = l.allocation_id
JOIN projects p ON p.id = a.project_id JOIN organisations o ON o.id = p.organisation_id
WHERE l.created_at >= :start AND l.created_at < :end GROUP BY o.kind
"""


def _array(values: tuple[str, ...]) -> str:
    return "[" + ",".join(f"'{v}'" for v in values) + "]"


def main() -> None:
    args = parse_args()
    base = os.environ.get("GPUCENTER_DATABASE_URL") or os.environ.get(
        "GPUCENTER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    if make_url(base).get_backend_name() != "postgresql":
        sys.exit("GPUCENTER_DATABASE_URL must point at a PostgreSQL server")
    name = f"gpucenter_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    result: dict[str, object] = {"rows": args.rows, "database": "postgresql"}
    engine = None
    try:
        migrate(url)
        engine = make_engine(url)
        fmt = {
            "kinds": _array(KINDS),
            "nkinds": len(KINDS),
            "types": _array(TYPES),
            "ntypes": len(TYPES),
            "orgs": args.orgs,
            "allocs": args.allocations,
            "jobs": args.jobs,
            "rows": args.rows,
            "months": MONTHS,
        }
        t = time.perf_counter()
        with engine.begin() as conn:
            for sql in SEED_SQL:
                conn.execute(text(sql.format(**fmt)))
        log(f"seeded in {time.perf_counter() - t:.1f} s; generating {args.rows:,} ledger rows")
        t = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL work_mem = '256MB'"))
            conn.execute(text(LEDGER_SQL.format(**fmt)))
        result["generate_s"] = round(time.perf_counter() - t, 1)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
            result["rollup_rows"] = conn.execute(
                text("SELECT count(*) FROM ledger_monthly")
            ).scalar()
        log(f"generated in {result['generate_s']} s; rollup has {result['rollup_rows']} rows")

        sessions = session_factory(engine)
        dims = [Dimension.MONTH, Dimension.APPLICANT_TYPE]
        times: list[float] = []
        rows = []
        for _ in range(max(args.repeat, 1)):
            t = time.perf_counter()
            with sessions.begin() as s:
                rows = usage_report(s, ADMIN, dims, args.month, args.month)
            times.append(time.perf_counter() - t)
        y, m = int(args.month[:4]), int(args.month[5:])
        start = datetime(y, m, 1, tzinfo=UTC)
        end = datetime(y + (m == 12), 1 if m == 12 else m + 1, 1, tzinfo=UTC)
        with engine.connect() as conn:
            t = time.perf_counter()
            raw = dict(conn.execute(text(RAW_CHECK_SQL), {"start": start, "end": end}).all())
            result["raw_query_s"] = round(time.perf_counter() - t, 3)
        got = {r.key["applicant_type"]: r.gpu_hours for r in rows}
        result["report_matches_raw"] = set(got) == set(raw) and all(
            abs(got[k] - float(raw[k])) <= 1e-6 * max(1.0, float(raw[k])) for k in raw
        )
        result["report_first_s"] = round(times[0], 4)
        result["report_s"] = round(statistics.median(times), 4)
        log(f"report: {result['report_s']} s (raw GROUP BY: {result['raw_query_s']} s)")

        charges = [
            UsageCharge(
                f"slurm:bench:{i}",
                1 + i % args.allocations,
                TYPES[(1 + i % args.allocations) % len(TYPES)],
                float(60 + i % 7200),
                START + timedelta(seconds=(i * 7919) % (MONTHS * 30 * 86400)),
                None,
            )
            for i in range(args.ingest)
        ]
        t = time.perf_counter()
        with sessions.begin() as s:
            ingested = ingest_usage(s, charges)
        elapsed = time.perf_counter() - t
        result["ingested"] = ingested.inserted
        result["ingest_1m_s"] = round(elapsed * 1_000_000 / max(args.ingest, 1), 2)
        log(f"ingested {ingested.inserted:,} in {elapsed:.1f} s")
        with engine.connect() as conn:
            total_ledger = conn.execute(
                text("SELECT sum(gpu_seconds) FROM ledger_entries")
            ).scalar()
            total_rollup = conn.execute(
                text("SELECT sum(gpu_seconds) FROM ledger_monthly")
            ).scalar()
        result["rollup_equals_ledger"] = abs(
            float(total_ledger) - float(total_rollup)
        ) <= 1e-6 * float(total_ledger)
    finally:
        if engine is not None:
            engine.dispose()
        if not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
