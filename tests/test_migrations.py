"""The Alembic migrations build exactly the schema the code declares, on SQLite and PostgreSQL,
and upgrade the previous release's database with its data in it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text

from gpucenter.persistence.db import migrate
from gpucenter.persistence.schema import Base


def test_migrations_match_the_declared_tables(db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert diff == []
    assert {"jobs", "allocations", "ledger_entries", "users", "api_tokens"} <= tables


def test_upgrading_twice_is_harmless(db_url: str) -> None:
    migrate(db_url)
    migrate(db_url)


# ------------------------------------------- forward from the previous release, with data
PREVIOUS_RELEASE = "0011"
OLD_SECRET = "hf_oldrowsecret0123456789"
T = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of each kind with nothing in it yet (the test migrates it itself)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    return str(request.getfixturevalue("postgres_url"))


def _previous_release_data(url: str) -> None:
    """Representative rows as revision 0011's schema holds them, written with plain SQL (not
    today's tables): a centre with a project, its allocation and members, a site, jobs in
    every state the scheduler meets (pending, running, completed and charged), a charge
    from the Slurm ingest, a token and fair-share usage."""
    engine = create_engine(url)
    sqlite = engine.dialect.name == "sqlite"

    def ts(at: datetime) -> object:  # SQLAlchemy's storage format on SQLite
        return at.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else at

    rows: list[tuple[str, dict[str, object]]] = [
        (
            "INSERT INTO organisations (id, name, kind, created_at) VALUES (1, 'Old Uni', "
            "'university', :t)",
            {"t": ts(T)},
        ),
        (
            "INSERT INTO users (id, username, display_name, organisation_id, is_admin, "
            "created_at) VALUES (1, 'olduser', 'Old User', 1, false, :t)",
            {"t": ts(T)},
        ),
        (
            "INSERT INTO api_tokens (id, user_id, name, token_hash, created_at) VALUES "
            "(1, 1, 'cli', 'h0', :t)",
            {"t": ts(T)},
        ),
        (
            "INSERT INTO projects (id, name, title, organisation_id, created_at) VALUES "
            "(1, 'oldproj', 'An old project', 1, :t)",
            {"t": ts(T)},
        ),
        ("INSERT INTO memberships (id, project_id, user_id, role) VALUES (1, 1, 1, 'pi')", {}),
        (
            "INSERT INTO allocations (id, project_id, gpu_seconds, starts_at, ends_at, "
            "created_at, state) VALUES (1, 1, 360000, :s, :e, :s, 'active')",
            {"s": ts(T - timedelta(days=10)), "e": ts(T + timedelta(days=300))},
        ),
        ("INSERT INTO sites (id, name, kind) VALUES (1, 'local', 'local')", {}),
        (
            "INSERT INTO nodes (id, site_id, name, gpu_type, gpu_count, block, virtual) VALUES "
            "(1, 1, 'local', 'vgpu', 4, 'default', true)",
            {},
        ),
    ]
    job = (
        "INSERT INTO jobs (id, project_id, allocation_id, user_id, site_id, name, command, "
        "gpu_type, gpus_per_node, nodes, time_limit_s, env, state, reason, reason_detail, "
        "submitted_at, started_at, ended_at, external_id, placement, idempotency_key, qos, "
        "after_ok, runs, borrowed) VALUES (:id, 1, 1, 1, 1, :name, :cmd, 'vgpu', 1, 1, 600, "
        ":env, :state, '', '', :sub, :start, :end, :ext, :placement, :key, 'normal', '[]', "
        ":runs, false)"
    )
    done = T + timedelta(minutes=10)
    for values in (
        {
            "id": 1,
            "name": "done",
            "cmd": "true",
            "state": "COMPLETED",
            "start": ts(T),
            "end": ts(done),
            "ext": "111",
            "placement": '[{"node": "local", "gpus": [0]}]',
            "runs": 1,
        },
        {
            "id": 2,
            "name": "waiting",
            "cmd": "echo migrated",
            "state": "PENDING",
            "start": None,
            "end": None,
            "ext": None,
            "placement": None,
            "runs": 0,
        },
        {
            "id": 3,
            "name": "slurmjob",
            "cmd": "true",
            "state": "COMPLETED",
            "start": ts(T),
            "end": ts(done),
            "ext": "9001",
            "placement": None,
            "runs": 1,
        },
    ):
        env = json.dumps({"HF_TOKEN": OLD_SECRET, "EPOCHS": "3"}) if values["id"] == 2 else "{}"
        rows.append((job, values | {"sub": ts(T), "key": f"old-{values['id']}", "env": env}))
    ledger = (
        "INSERT INTO ledger_entries (id, allocation_id, job_id, source, gpu_type, gpu_seconds, "
        "created_at) VALUES (:id, 1, :job, :src, 'vgpu', :secs, :t)"
    )
    rows += [
        (ledger, {"id": 1, "job": 1, "src": "job:1:run:1", "secs": 600.0, "t": ts(done)}),
        (ledger, {"id": 2, "job": 3, "src": "slurm:oldcluster:9001", "secs": 120.0, "t": ts(done)}),
        (
            "INSERT INTO decayed_usage (project_id, user_id, gpu_seconds, as_of, charges) VALUES "
            "(1, 1, 720.0, :t, 2)",
            {"t": ts(done)},
        ),
    ]
    with engine.begin() as conn:
        for sql, params in rows:
            conn.execute(text(sql), params)
        if not sqlite:  # plain inserts with explicit ids leave the sequences behind
            for table in ("organisations", "users", "projects", "jobs", "ledger_entries"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 100)"))
    engine.dispose()


def test_upgrading_the_previous_release_keeps_its_data_and_the_services_read_it(
    empty_url: str, tmp_path: Path
) -> None:
    migrate(empty_url, PREVIOUS_RELEASE)
    _previous_release_data(empty_url)
    # to head: 0012 (audit key ids), 0013 (epoch, cursors, ...), 0018 (env sealed)
    migrate(empty_url, var_dir=tmp_path / "var")

    # 0018 sealed the old job's env: no value of it is left in clear in the database.
    raw = create_engine(empty_url)
    with raw.connect() as conn:
        stored = conn.execute(text("SELECT env, request_hash FROM jobs WHERE id = 2")).one()
        dump = str(conn.execute(text("SELECT * FROM jobs")).all())
        # 0019: no project shares its outputs until its PI says so.
        shares = conn.execute(text("SELECT share_outputs FROM projects")).scalars().all()
    raw.dispose()
    assert shares == [False]
    assert OLD_SECRET not in dump and "EPOCHS" in dump  # names stay readable
    assert stored.request_hash is None

    if empty_url.startswith("sqlite:///"):
        assert OLD_SECRET.encode() not in Path(empty_url.removeprefix("sqlite:///")).read_bytes()

    from gpucenter.config import Settings
    from gpucenter.persistence.tables import AllocationRow, JobRow, LedgerEntryRow
    from gpucenter.persistence.tables_ops import SchedulerLeaderRow
    from gpucenter.services.scheduling.cycle import _budgets_left, run_pass
    from gpucenter.services.slurm.ingest import ingest_records
    from gpucenter.services.slurm.usage import UsageRecord
    from tests.factories import make_context, wait_until

    ctx = make_context(Settings(var_dir=tmp_path / "var", database_url=empty_url))
    try:
        with ctx.sessions() as s:
            jobs = {j.id: j for j in s.scalars(select(JobRow))}
            assert {j: (r.name, r.state, r.runs) for j, r in jobs.items()} == {
                1: ("done", "COMPLETED", 1),
                2: ("waiting", "PENDING", 0),
                3: ("slurmjob", "COMPLETED", 1),
            }
            assert all(r.reserved_s is None for r in jobs.values())  # new column, no value
            assert jobs[1].placement == [{"node": "local", "gpus": [0]}]
            from gpucenter.persistence.sealed_env import keys_for, open_env

            opened = open_env(keys_for(s.info), 1, jobs[2].env)
            assert opened == {"HF_TOKEN": OLD_SECRET, "EPOCHS": "3"}
            leader = s.get(SchedulerLeaderRow, 1)
            assert leader is not None and leader.epoch == 0
            alloc = s.get_one(AllocationRow, 1)
            running = [r for r in jobs.values() if r.state == "RUNNING"]
            assert _budgets_left(s, running, list(jobs.values())) == {1: 360000 - 720.0}
        # The Slurm ingest of the new release does not charge again what the old one did.
        record = UsageRecord(
            "oldcluster",
            "9001",
            "oldproj",
            "olduser",
            "COMPLETED",
            1,
            "vgpu",
            120,
            T + timedelta(minutes=10),
            "",
        )
        with ctx.sessions.begin() as s:
            report = ingest_records(s, [record], T + timedelta(hours=1))
        assert report.charged == [] and report.already == 1

        # The scheduler runs the old pending job on the old site, and charges it once.
        def finished() -> bool:
            run_pass(ctx)
            with ctx.sessions() as s:
                return s.get_one(JobRow, 2).state == "COMPLETED"

        wait_until(finished, timeout=60, step=0.2)
        with ctx.sessions() as s:
            row = s.get_one(JobRow, 2)
            assert row.reserved_s == 600 and row.runs == 1 and alloc.gpu_seconds == 360000
            sources = sorted(s.scalars(select(LedgerEntryRow.source)))
        assert sources == ["job:1:run:1", "job:2:run:1", "slurm:oldcluster:9001"]
    finally:
        ctx.dispatcher.shutdown()
        ctx.engine.dispose()
