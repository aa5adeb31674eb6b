"""Fencing: once another server has taken the leadership, nothing the old leader writes lands.

On PostgreSQL (the lease, the advisory lock's keepalives) and, for the epoch check itself,
on SQLite too. A leader that stops renewing its lease (what a SIGSTOP does to it) is
replaced; its fenced transactions, in flight or new, are refused; a start it decided never
reaches the site; a job another leader started is never handed over again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError

from gpucenter.config import Settings
from gpucenter.core.model import NodeGpus
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState
from gpucenter.persistence.db import migrate
from gpucenter.persistence.tables import JobRow, LedgerEntryRow
from gpucenter.persistence.tables_ops import SchedulerLeaderRow
from gpucenter.services.fencing import Deposed
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.scheduling.launch import launch_requests
from gpucenter.services.scheduling.leader import (
    FileLeaderLock,
    PostgresLeaderLock,
    lock_connect_args,
)
from gpucenter.services.scheduling.starts import start_job
from tests.factories import make_context, seed_centre, wait_until

LEASE_S = 1.5


class Silent(PostgresLeaderLock):
    """A leader that stops renewing its lease, as a paused (SIGSTOPped) one does."""

    def _heartbeat(self, conn):  # type: ignore[no-untyped-def]
        self._lost.wait()


def _epoch(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        found = conn.execute(select(SchedulerLeaderRow.epoch)).scalar_one()
    engine.dispose()
    return int(found)


def _take_over(new: PostgresLeaderLock, within_s: float = 15.0) -> float:
    began = time.monotonic()
    wait_until(new.try_acquire, timeout=within_s, step=0.2)
    return time.monotonic() - began


def test_a_silent_leader_is_replaced_and_its_writes_refused(
    postgres_url: str, tmp_path: Path
) -> None:
    migrate(postgres_url)
    ctx = make_context(Settings(var_dir=tmp_path / "var", database_url=postgres_url))
    seed_centre(ctx)
    old = Silent(ctx.engine, lease_s=LEASE_S, holder="old")
    new = PostgresLeaderLock(ctx.engine, lease_s=LEASE_S, holder="new")
    try:
        assert old.try_acquire() and old.epoch is not None
        assert not new.try_acquire()  # the lease is fresh: nobody takes over
        ctx.fence.hold(old.epoch)
        with ctx.fenced() as s:  # the leader writes while it leads
            s.add(_charge(s, "before"))
        took = _take_over(new)
        assert new.epoch == old.epoch + 1 == _epoch(postgres_url)
        assert took < 15.0
        # The old leader wakes up and writes under its old epoch: refused, nothing lands.
        with pytest.raises(Deposed), ctx.fenced() as s:
            s.add(_charge(s, "after"))
        with ctx.sessions() as s:
            sources = set(s.scalars(select(LedgerEntryRow.source)))
        assert "ledger:before" in sources and "ledger:after" not in sources
    finally:
        new.release()
        old.release()
        ctx.engine.dispose()


def test_taking_over_waits_for_and_ends_a_deposed_transaction_in_flight(
    postgres_url: str, tmp_path: Path
) -> None:
    """The old leader checked its epoch (FOR KEY SHARE) and then stopped before COMMIT: the
    new leader's epoch waits for that transaction and, past its lock timeout, ends it; the
    old transaction's write never lands, whenever it tries to commit."""
    migrate(postgres_url)
    ctx = make_context(Settings(var_dir=tmp_path / "var", database_url=postgres_url))
    seed_centre(ctx)
    old = Silent(ctx.engine, lease_s=LEASE_S, holder="old")
    new = PostgresLeaderLock(ctx.engine, lease_s=LEASE_S, holder="new")
    try:
        assert old.try_acquire() and old.epoch is not None
        ctx.fence.hold(old.epoch)
        s = ctx.sessions()
        s.begin()
        s.add(_charge(s, "in-flight"))
        ctx.fence.check(s)  # checked and locked: now "paused" before COMMIT
        _take_over(new)
        assert new.epoch == old.epoch + 1
        with pytest.raises(DBAPIError):  # its session was ended by the new leader
            s.commit()
        s.close()
        with ctx.sessions() as check:
            assert (
                check.scalar(
                    select(LedgerEntryRow.id).where(LedgerEntryRow.source == "ledger:in-flight")
                )
                is None
            )
    finally:
        new.release()
        old.release()
        ctx.engine.dispose()


def test_the_lock_connection_has_keepalives_and_timeouts(postgres_url: str) -> None:
    migrate(postgres_url)
    args = lock_connect_args(6.0)
    assert (args["keepalives"], args["keepalives_idle"], args["keepalives_count"]) == (1, 2, 3)
    assert args["tcp_user_timeout"] == 6000
    engine = create_engine(postgres_url)
    lock = PostgresLeaderLock(engine, lease_s=6.0)
    try:
        assert lock.try_acquire()
        conn = lock._conn
        assert conn is not None
        with lock._mutex:
            shown = {
                name: conn.execute(text(f"SHOW {name}")).scalar()
                for name in (
                    "tcp_keepalives_idle",
                    "tcp_keepalives_count",
                    "tcp_user_timeout",
                    "statement_timeout",
                    "lock_timeout",
                )
            }
            conn.commit()
        assert shown == {
            "tcp_keepalives_idle": "2",
            "tcp_keepalives_count": "3",
            "tcp_user_timeout": "6000",
            "statement_timeout": "3s",
            "lock_timeout": "1800ms",
        }
    finally:
        lock.release()
        engine.dispose()


def test_a_deposed_leader_never_hands_a_job_to_the_site(db_url: str, tmp_path: Path) -> None:
    """On both databases: the start is refused before the dispatcher sees it."""
    ctx = make_context(Settings(var_dir=tmp_path / "var", database_url=db_url))
    centre = seed_centre(ctx)
    job = jobs.submit(ctx, centre.alice, JobForm(project="alpha", command="true")).id
    with ctx.sessions() as s:
        request = launch_requests(s, {JobId(job): (NodeGpus("local", (0,)),)})[JobId(job)]
    submitted: list[JobId] = []

    class Recording:
        capabilities = ctx.dispatcher.capabilities

        def submit(self, req):  # type: ignore[no-untyped-def]
            submitted.append(req.job_id)
            raise AssertionError("a deposed leader reached the site")

    ctx.fence.hold(41)  # we led under 41; the database says 0 (or whatever came since)
    with pytest.raises(Deposed):
        start_job(ctx, request, dispatcher=Recording())  # type: ignore[arg-type]
    assert submitted == []
    with ctx.sessions() as s:
        row = s.get(JobRow, job)
        assert row is not None and row.state == JobState.PENDING.value
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def test_a_job_started_by_another_leader_is_not_handed_over_again(
    db_url: str, tmp_path: Path
) -> None:
    """The pass decided to start the job; by the time it locks the row another leader has
    started it: the row's state is checked under the lock and the site never sees it."""
    ctx = make_context(Settings(var_dir=tmp_path / "var", database_url=db_url))
    centre = seed_centre(ctx)
    job = jobs.submit(ctx, centre.alice, JobForm(project="alpha", command="true")).id
    with ctx.sessions() as s:
        request = launch_requests(s, {JobId(job): (NodeGpus("local", (0,)),)})[JobId(job)]
    with ctx.sessions.begin() as s:
        row = s.get(JobRow, job)
        assert row is not None
        row.state, row.runs, row.external_id = JobState.RUNNING.value, 1, "elsewhere"

    class Refusing:
        capabilities = ctx.dispatcher.capabilities

        def submit(self, req):  # type: ignore[no-untyped-def]
            raise AssertionError("started twice")

    assert start_job(ctx, request, dispatcher=Refusing()) == 0  # type: ignore[arg-type]
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def test_sqlite_epoch_moves_with_the_file_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    migrate(url)
    ctx = make_context(Settings(var_dir=tmp_path / "var", database_url=url))
    seed_centre(ctx)
    first = FileLeaderLock(tmp_path / "lock", ctx.engine)
    assert first.try_acquire() and first.epoch == 1
    ctx.fence.hold(1)
    first.release()
    second = FileLeaderLock(tmp_path / "lock", ctx.engine)
    assert second.try_acquire() and second.epoch == 2
    with pytest.raises(Deposed), ctx.fenced() as s:
        s.add(_charge(s, "stale"))
    second.release()
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def test_a_renewing_leader_keeps_its_lease(postgres_url: str) -> None:
    migrate(postgres_url)
    engine = create_engine(postgres_url)
    leader = PostgresLeaderLock(engine, lease_s=LEASE_S, holder="live")
    other = PostgresLeaderLock(engine, lease_s=LEASE_S, holder="other")
    try:
        assert leader.try_acquire()
        stop = time.monotonic() + 4 * LEASE_S
        while time.monotonic() < stop:
            assert not other.try_acquire()
            assert leader.still_held()
            time.sleep(0.3)
    finally:
        leader.release()
        other.release()
        engine.dispose()


def _charge(s, tag: str) -> LedgerEntryRow:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from gpucenter.persistence.tables import AllocationRow

    alloc = s.scalars(select(AllocationRow.id)).first()
    return LedgerEntryRow(
        allocation_id=alloc,
        source=f"ledger:{tag}",
        gpu_type="vgpu",
        gpu_seconds=1.0,
        created_at=datetime.now(tz=UTC),
    )
