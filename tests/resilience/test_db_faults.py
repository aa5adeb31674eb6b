"""Database faults injected into submission, the scheduling pass and the usage ingest, on
PostgreSQL: a connection dropped in the middle of a transaction, a COMMIT that succeeds but
whose answer is lost, a statement timeout. After each: nothing acknowledged is lost, nothing
is started or charged twice.

Starts are counted by the jobs themselves (each appends its job id to a file), charges in
the ledger, submissions by their Idempotency-Key and rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DBAPIError

from gpucenter.config import Settings
from gpucenter.dispatch.slurm.cli import SlurmCli
from gpucenter.domain.jobs import JobState
from gpucenter.persistence.db import migrate
from gpucenter.persistence.tables import JobRow, LedgerEntryRow
from gpucenter.persistence.tables_ops import UsageCursorRow
from gpucenter.services.context import AppContext
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.scheduling.cycle import run_pass
from gpucenter.services.slurm.ingest import ingest_site
from tests.accounting.test_slurm_ingest import FakeSacct
from tests.conftest import PG_ADMIN_URL
from tests.factories import Centre, make_context, seed_centre, wait_until
from tests.resilience.faults import EngineFaults, PgProxy, row_locked
from tests.resilience.servers import Server

STATEMENT_TIMEOUT_MS = 400
TIMED_OUT = r"statement timeout|canceling statement"


@dataclass
class World:
    ctx: AppContext
    centre: Centre
    faults: EngineFaults
    starts: Path
    began: datetime

    def submit(self, n: int = 1) -> list[int]:
        form = JobForm(
            project="alpha",
            # In its run directory: the only place a sandboxed job writes besides its home.
            command='echo "$GPUCENTER_JOB_ID" >> started; sleep 0.2',
            time_limit_s=60,
        )
        return [jobs.submit(self.ctx, self.centre.alice, form).id for _ in range(n)]

    def run_until_done(self, ids: list[int], timeout: float = 60.0) -> None:
        def done() -> bool:
            with suppress(DBAPIError):  # a fault hit the pass: the next one goes on
                run_pass(self.ctx)
            with self.ctx.sessions() as s:
                states = s.scalars(select(JobRow.state).where(JobRow.id.in_(ids))).all()
            return all(JobState(st).is_terminal for st in states)

        wait_until(done, timeout=timeout, step=0.1)

    def started(self) -> Counter[int]:
        """Every start of every job, counted by the processes themselves: each run
        directory (a second start of a run gets a fresh one, the old one set aside) holds
        the ids its process wrote."""
        found: Counter[int] = Counter(int(x) for x in self.starts.read_text().split())
        for record in self.ctx.settings.tenant_root.glob("jobs/*/started"):
            found.update(int(x) for x in record.read_text().split())
        return found

    def charges(self) -> Counter[int | None]:
        with self.ctx.sessions() as s:
            return Counter(s.scalars(select(LedgerEntryRow.job_id)))


@pytest.fixture
def world(postgres_url: str, tmp_path: Path) -> Iterator[World]:
    migrate(postgres_url)
    url = make_url(postgres_url).update_query_dict(
        {"options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"}
    )
    settings = Settings(
        var_dir=tmp_path / "var",
        database_url=url.render_as_string(hide_password=False),
        kill_grace_s=0.5,
    )
    ctx = make_context(settings)
    centre = seed_centre(ctx)
    starts = tmp_path / "starts.log"
    starts.touch()
    began = datetime.now(tz=UTC) + timedelta(seconds=1)
    yield World(ctx, centre, EngineFaults(ctx.engine, PG_ADMIN_URL), starts, began)
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def _once(w: World, ids: list[int]) -> None:
    """Every job ran to completion, was started once and charged once."""
    with w.ctx.sessions() as s:
        rows = s.execute(select(JobRow.id, JobRow.state, JobRow.runs).where(JobRow.id.in_(ids)))
        got = {r.id: (r.state, r.runs) for r in rows}
    assert got == {i: (JobState.COMPLETED.value, 1) for i in ids}
    assert w.started() == Counter(dict.fromkeys(ids, 1))
    charges = w.charges()
    assert {i: charges[i] for i in ids} == dict.fromkeys(ids, 1)


# ---------------------------------------------------------------- the scheduling pass
def test_start_whose_commit_answer_is_lost(world: World) -> None:
    ids = world.submit(2)
    world.faults.lose_commit_after(r"UPDATE jobs SET state")
    world.run_until_done(ids)
    assert world.faults.fired == ["commit answer lost"]
    _once(world, ids)


def test_start_whose_connection_drops_mid_transaction(world: World) -> None:
    ids = world.submit(2)
    world.faults.kill_before(r"UPDATE jobs SET state")
    world.run_until_done(ids)
    assert len(world.faults.fired) == 1
    _once(world, ids)


def test_end_whose_commit_answer_is_lost(world: World) -> None:
    ids = world.submit(2)
    world.faults.lose_commit_after(r"INSERT INTO ledger_entries")
    world.run_until_done(ids)
    assert world.faults.fired == ["commit answer lost"]
    _once(world, ids)


def test_end_whose_connection_drops_mid_transaction(world: World) -> None:
    ids = world.submit(2)
    world.faults.kill_before(r"INSERT INTO ledger_entries")
    world.run_until_done(ids)
    assert len(world.faults.fired) == 1
    _once(world, ids)


def test_a_pass_hits_the_statement_timeout(world: World) -> None:
    (job,) = world.submit(1)
    lock = "SELECT id FROM jobs WHERE id = :id FOR UPDATE"
    with row_locked(_unlimited(world), lock, {"id": job}):
        with pytest.raises(DBAPIError, match=TIMED_OUT):
            run_pass(world.ctx)
        assert world.started() == Counter()
    world.run_until_done([job])
    _once(world, [job])


# ----------------------------------------------------------------------- usage ingest
def _sacct(w: World) -> FakeSacct:
    """Twenty ended jobs of project alpha, after its allocation began (the world's start)."""
    sacct = FakeSacct()
    for i in range(20):
        sacct.job(100 + i, "gpucenter_alpha", 1 + i % 3, 60 + i, w.began + timedelta(seconds=i))
    return sacct


def _ingest(w: World, sacct: FakeSacct) -> None:
    with w.ctx.fenced() as s:
        ingest_site(s, SlurmCli(runner=sacct), "c1", "gpucenter", w.began + timedelta(minutes=2))


def _slurm_ledger(w: World) -> dict[str, float]:
    with w.ctx.sessions() as s:
        rows = s.execute(
            select(LedgerEntryRow.source, LedgerEntryRow.gpu_seconds).where(
                LedgerEntryRow.source.like("slurm:%")
            )
        )
        return dict(rows.tuples().all())


EXPECTED = {f"slurm:c1:{100 + i}": float((1 + i % 3) * (60 + i)) for i in range(20)}


def test_ingest_whose_commit_answer_is_lost(world: World) -> None:
    sacct = _sacct(world)
    world.faults.lose_commit_after(r"INSERT INTO ledger_entries")
    with pytest.raises(DBAPIError):
        _ingest(world, sacct)
    assert _slurm_ledger(world) == EXPECTED  # it did commit: only the answer was lost
    _ingest(world, sacct)  # the retry finds every record charged
    assert _slurm_ledger(world) == EXPECTED


def test_ingest_whose_connection_drops_mid_transaction(world: World) -> None:
    sacct = _sacct(world)
    world.faults.kill_before(r"INSERT INTO ledger_entries")
    with pytest.raises(DBAPIError):
        _ingest(world, sacct)
    assert _slurm_ledger(world) == {}
    with world.ctx.sessions() as s:
        assert s.get(UsageCursorRow, "slurm:c1") is None  # the cursor did not move either
    _ingest(world, sacct)
    assert _slurm_ledger(world) == EXPECTED


def test_ingest_hits_the_statement_timeout(world: World) -> None:
    sacct = _sacct(world)
    _ingest(world, FakeSacct())  # the cursor row exists
    lock = "SELECT source FROM usage_cursors WHERE source = :s FOR UPDATE"
    with (
        row_locked(_unlimited(world), lock, {"s": "slurm:c1"}),
        pytest.raises(DBAPIError, match=TIMED_OUT),
    ):
        _ingest(world, sacct)
    assert _slurm_ledger(world) == {}
    _ingest(world, sacct)
    _ingest(world, sacct)
    assert _slurm_ledger(world) == EXPECTED


def _unlimited(w: World) -> str:
    """The test's own database, without the statement timeout (the lock holder's side)."""
    url = make_url(w.ctx.settings.database_url)
    return url.difference_update_query(["options"]).render_as_string(hide_password=False)


# ------------------------------------------------------------------------- submission
@pytest.fixture
def proxied(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Server, PgProxy, str, str]]:
    migrate(postgres_url)
    var = tmp_path / "var"
    var.mkdir()
    ctx = make_context(Settings(var_dir=var, database_url=postgres_url))
    centre = seed_centre(ctx)
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()
    proxy = PgProxy()
    extra = {"GPUCENTER_SCHEDULER_ENABLED": "false"}
    server = Server(proxy.url(postgres_url), var, extra_env=extra).start()
    try:
        yield server, proxy, centre.alice_token, postgres_url
    finally:
        server.stop()
        proxy.close()


def _post(server: Server, token: str, key: str, name: str) -> httpx.Response:
    body = {"project": "alpha", "command": "true", "name": name}
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    return httpx.post(server.url + "/api/v1/jobs", json=body, headers=headers, timeout=30)


def _jobs_named(url: str, name: str) -> list[int]:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(select(JobRow.id).where(JobRow.name == name)).scalars().all()
    engine.dispose()
    return list(found)


@pytest.mark.parametrize("after", [True, False], ids=["answer-lost", "dropped-before"])
def test_a_submission_through_a_failing_connection(
    proxied: tuple[Server, PgProxy, str, str], after: bool
) -> None:
    """The insert's connection is cut (after the insert ran, or before it reached the
    database): the client's answer, and its retry with the same key, name one job."""
    server, proxy, token, url = proxied
    assert _post(server, token, "warm", "warm").status_code == 201  # pools filled
    proxy.arm("INSERT INTO jobs", after=after)
    first = _post(server, token, "k1", "faulty")
    assert proxy.tripped.wait(10)
    acknowledged = {first.json()["id"]} if first.status_code in (200, 201) else set()
    retry = _post(server, token, "k1", "faulty")
    assert retry.status_code in (200, 201), retry.text
    acknowledged.add(retry.json()["id"])
    assert len(acknowledged) == 1  # one job, whichever answer the client heard
    assert _jobs_named(url, "faulty") == sorted(acknowledged)
