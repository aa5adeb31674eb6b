"""A follower's tries at the PostgreSQL leader lock (services/scheduling/leader.py) keep one
connection between them instead of opening one per try (a backend start a second per API
worker), survive that connection's death, and close it when the follower stops."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event, text

from gpucenter.persistence.db import migrate
from gpucenter.services.scheduling.leader import PostgresLeaderLock


def _counting_connects(lock: PostgresLeaderLock) -> list[Any]:
    opened: list[Any] = []
    event.listen(lock._engine, "connect", lambda *_: opened.append(1))
    return opened


def _lock_backends(url: str) -> int:
    """Connections of leader locks, leading or trying (they name themselves)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        found = conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                "'gpucenter-leader' AND datname = current_database()"
            )
        )
    engine.dispose()
    return int(found or 0)


def test_a_follower_keeps_one_connection_for_its_tries(postgres_url: str) -> None:
    migrate(postgres_url)
    leader = PostgresLeaderLock(create_engine(postgres_url), lease_s=3.0)
    follower = PostgresLeaderLock(create_engine(postgres_url), lease_s=3.0)
    opened = _counting_connects(follower)
    try:
        assert leader.try_acquire()
        assert [follower.try_acquire() for _ in range(5)] == [False] * 5
        assert len(opened) == 1
        assert _lock_backends(postgres_url) == 2  # the leader's and the follower's one

        # The kept connection dies (a database restart, an operator's kill): the next try
        # answers on a new one rather than failing.
        assert follower._probe is not None
        kept = follower._probe.scalar(text("SELECT pg_backend_pid()"))
        follower._probe.commit()
        engine = create_engine(postgres_url)
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": kept})
            conn.commit()
        engine.dispose()
        assert follower.try_acquire() is False
        assert len(opened) == 2

        leader.release()
        assert follower.try_acquire() is True  # takes it on the kept connection
        assert len(opened) == 2
        follower.release()
        assert _lock_backends(postgres_url) == 0
        other = PostgresLeaderLock(create_engine(postgres_url), lease_s=3.0)
        assert leader.try_acquire()
        assert other.try_acquire() is False
        assert _lock_backends(postgres_url) == 2
        other.release()  # a follower stopping closes its kept connection
        assert _lock_backends(postgres_url) == 1
    finally:
        leader.release()
        follower.release()
