"""Leader election: of several servers on one database, exactly one runs the scheduler loop.

Taking the leadership also takes a new *epoch* (`scheduler_leader.epoch`, see
`gpucenter.services.fencing`): every write the scheduler makes checks it in its own
transaction, so a deposed leader that wakes up writes nothing.

**PostgreSQL.** The leader holds a session-level advisory lock on a connection of its own
and a *lease* in the leader row (``expires_at``, on the database's clock), renewed by a
heartbeat thread every quarter of `lease_s`. Three ways to lose it, each within the takeover
time (15 s with the default 6 s lease):

- the process dies: its connection closes and the database frees the lock at once;
- the host stops answering (cable, kernel hang): TCP keepalives and ``tcp_user_timeout``, on
  both ends of the lock connection, end it after a few seconds of silence;
- the process is paused while its host answers (SIGSTOP, a frozen VM): the kernel keeps the
  connection alive, so the lease is what counts. A follower that finds it expired ends the
  silent leader's lock session (``pg_terminate_backend``) and takes over; taking the epoch
  locks the leader row ``FOR UPDATE``, which waits for the fenced transactions still in
  flight and, past ``lock_timeout``, ends those too (they belong to the deposed leader).

The lock connection also has statement and lock timeouts, so no step of the election ever
blocks the loop for long.

**SQLite** has one writer machine by nature: an exclusive lock on a file next to the
database plays the lock's role between processes there, and the epoch is taken the same
way. A paused process keeps that file lock (there is no second machine to take over).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from gpucenter.services.fencing import LEADER_ROW

log = logging.getLogger(__name__)
SCHEDULER_LOCK_KEY = 0x6770_6373  # "gpcs"
DEFAULT_LEASE_S = 6.0


class LeaderLock(Protocol):
    def try_acquire(self) -> bool: ...

    def still_held(self) -> bool: ...

    def release(self) -> None: ...

    @property
    def epoch(self) -> int | None:
        """The epoch taken with the leadership; None while not leading."""
        ...


def holder_name() -> str:
    """Who leads, for operators: host and process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lock_connect_args(lease_s: float) -> dict[str, Any]:
    """libpq settings of the lock connection: keepalives and a user timeout on our end,
    the same on the server's end (session settings), and statement/lock timeouts, all
    scaled to the lease so that a silent peer is dropped well within the takeover time."""
    idle = max(1, int(lease_s / 3))
    user_timeout_ms = int(lease_s * 1000)
    server = {
        "tcp_keepalives_idle": idle,
        "tcp_keepalives_interval": 1,
        "tcp_keepalives_count": 3,
        "tcp_user_timeout": user_timeout_ms,
        "statement_timeout": int(lease_s * 500),
        "lock_timeout": int(lease_s * 300),
        "idle_in_transaction_session_timeout": user_timeout_ms,
    }
    return {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": 1,
        "keepalives_count": 3,
        "tcp_user_timeout": user_timeout_ms,
        "connect_timeout": max(2, int(lease_s / 2)),
        "application_name": "gpucenter-leader",
        "options": " ".join(f"-c {k}={v}" for k, v in server.items()),
    }


class PostgresLeaderLock:
    """The advisory lock, the epoch and the lease (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        key: int = SCHEDULER_LOCK_KEY,
        lease_s: float = DEFAULT_LEASE_S,
        holder: str | None = None,
    ) -> None:
        self._engine = create_engine(
            engine.url, poolclass=NullPool, connect_args=lock_connect_args(lease_s)
        )
        self._key = key
        self._lease_s = lease_s
        self._holder = holder or holder_name()
        self._conn: Connection | None = None
        self._probe: Connection | None = None  # a follower's connection between tries
        self._epoch: int | None = None
        self._mutex = threading.Lock()  # the lock connection is used by two threads
        self._lost = threading.Event()
        self._beat: threading.Thread | None = None

    @property
    def epoch(self) -> int | None:
        return self._epoch

    def try_acquire(self) -> bool:
        if self._conn is not None:
            return self.still_held()
        probe, self._probe = self._probe, None
        if probe is not None:
            try:
                return self._try_on(probe)
            except Exception:  # the kept connection died (a database restart): a new one
                log.debug("the kept lock probe failed; trying on a new connection", exc_info=True)
        return self._try_on(self._engine.connect())

    def _try_on(self, conn: Connection) -> bool:
        """Try the lock on `conn`; a follower keeps `conn` for its next try (it tries every
        tick, and a new connection each time cost a PostgreSQL backend start a second per
        follower: about 4% of a core per API worker under issue 18's benchmark)."""
        try:
            got = bool(
                conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar()
            )
            conn.commit()
            if not got:
                self._end_silent_leader(conn)
                self._probe = conn
                return False
            epoch = self._take_epoch(conn)
        except Exception:
            conn.close()
            raise
        with self._mutex:
            self._conn, self._epoch = conn, epoch
            self._lost.clear()
        self._beat = threading.Thread(
            target=self._heartbeat, args=(conn,), name="gpucenter-lease", daemon=True
        )
        self._beat.start()
        log.info("took the scheduler leadership as %s, epoch %d", self._holder, epoch)
        return True

    def _end_silent_leader(self, conn: Connection) -> None:
        """The lock is held: if its holder let the lease expire, end its lock session (it is
        paused or cut off, or it would have renewed); the next attempt takes the lock."""
        row = conn.execute(
            text(
                "SELECT holder, expires_at IS NULL OR expires_at < now() FROM scheduler_leader "
                "WHERE id = :id"
            ),
            {"id": LEADER_ROW},
        ).one_or_none()
        conn.commit()
        if row is None or not row[1]:
            return
        pids = conn.execute(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid = :hi AND objid = :lo AND objsubid = 1"
            ),
            {"hi": (self._key >> 32) & 0xFFFF_FFFF, "lo": self._key & 0xFFFF_FFFF},
        ).scalars()
        for pid in list(pids):
            log.warning(
                "scheduler leader %s let its lease expire: ending its lock session %d", row[0], pid
            )
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        conn.commit()

    def _take_epoch(self, conn: Connection) -> int:
        """Lock the leader row FOR UPDATE (waiting out the deposed leader's fenced
        transactions, ending them past the lock timeout), then take the next epoch."""
        for attempt in range(5):
            try:
                conn.execute(
                    text("SELECT epoch FROM scheduler_leader WHERE id = :id FOR UPDATE"),
                    {"id": LEADER_ROW},
                )
                epoch = conn.execute(
                    text(
                        "UPDATE scheduler_leader SET epoch = epoch + 1, holder = :h, "
                        "taken_at = now(), expires_at = now() + make_interval(secs => :lease) "
                        "WHERE id = :id RETURNING epoch"
                    ),
                    {"h": self._holder, "lease": self._lease_s, "id": LEADER_ROW},
                ).scalar_one()
                conn.commit()
                return int(epoch)
            except DBAPIError as exc:
                conn.rollback()
                if getattr(exc.orig, "sqlstate", "") != "55P03" or attempt == 4:
                    raise
                self._end_fenced_transactions(conn)
        raise AssertionError("unreachable")

    def _end_fenced_transactions(self, conn: Connection) -> None:
        """Sessions still holding the leader row share-locked are a deposed leader's fenced
        transactions (we hold the advisory lock now): end them so the epoch can move on."""
        pids = conn.execute(
            text(
                "SELECT DISTINCT pid FROM pg_locks WHERE relation = 'scheduler_leader'::regclass "
                "AND mode = 'RowShareLock' AND pid <> pg_backend_pid()"
            )
        ).scalars()
        for pid in list(pids):
            log.warning("ending session %d: a deposed leader's transaction holds the epoch", pid)
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        conn.commit()

    def _renew(self, conn: Connection) -> bool:
        with self._mutex:
            if self._conn is not conn:
                return False
            done = conn.execute(
                text(
                    "UPDATE scheduler_leader SET expires_at = now() + make_interval(secs => :l) "
                    "WHERE id = :id AND epoch = :e"
                ),
                {"l": self._lease_s, "id": LEADER_ROW, "e": self._epoch},
            )
            conn.commit()
            return bool(getattr(done, "rowcount", 0))

    def _heartbeat(self, conn: Connection) -> None:
        """Renew the lease every quarter of it until it is lost or released."""
        every = self._lease_s / 4
        while not self._lost.wait(every):
            try:
                if self._renew(conn):
                    continue
                log.warning("the scheduler epoch moved on: another server leads now")
            except Exception as exc:
                log.warning(
                    "renewing the scheduler lease failed (%s); stepping down",
                    str(exc).splitlines()[0][:200],
                )
            self._lost.set()

    def still_held(self) -> bool:
        """The lease was renewed in time and the lock connection lives."""
        if self._conn is None:
            return False
        if self._lost.is_set():
            self._drop()
            return False
        return True

    def release(self) -> None:
        """Step down: end the lease now (a follower need not wait for it) and unlock. A
        follower closes the connection it keeps for its tries."""
        probe, self._probe = self._probe, None
        if probe is not None:
            try:
                probe.close()
            except Exception:
                log.debug("closing the lock probe failed", exc_info=True)
        conn = self._conn
        if conn is None:
            return
        try:
            with self._mutex:
                conn.execute(
                    text(
                        "UPDATE scheduler_leader SET expires_at = now() "
                        "WHERE id = :id AND epoch = :e"
                    ),
                    {"id": LEADER_ROW, "e": self._epoch},
                )
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                conn.commit()
        except Exception:
            log.debug("releasing the leadership cleanly failed", exc_info=True)
        finally:
            self._drop()

    def _drop(self) -> None:
        self._lost.set()
        with self._mutex:
            conn, self._conn, self._epoch = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.debug("closing a dead connection failed", exc_info=True)


class FileLeaderLock:
    """SQLite: an exclusive file lock; the epoch is taken in the database all the same."""

    def __init__(self, path: Path, engine: Engine | None = None) -> None:
        self._path = path
        self._engine = engine
        self._fh: IO[str] | None = None
        self._epoch: int | None = None

    @property
    def epoch(self) -> int | None:
        return self._epoch

    def try_acquire(self) -> bool:
        if self._fh is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self._path, "a+")  # noqa: SIM115 - held open for as long as we lead
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        self._epoch = self._take_epoch()
        return True

    def _take_epoch(self) -> int | None:
        if self._engine is None:
            return None
        with self._engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE scheduler_leader SET epoch = epoch + 1, holder = :h, taken_at = :t "
                    "WHERE id = :id"
                ),
                {"h": holder_name(), "t": datetime.now(tz=UTC), "id": LEADER_ROW},
            )
            epoch = conn.execute(
                text("SELECT epoch FROM scheduler_leader WHERE id = :id"), {"id": LEADER_ROW}
            ).scalar()
        return int(epoch) if epoch is not None else None

    def still_held(self) -> bool:
        return self._fh is not None

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
            self._epoch = None


def leader_lock_for(engine: Engine, var_dir: Path, lease_s: float = DEFAULT_LEASE_S) -> LeaderLock:
    url = make_url(str(engine.url))
    if url.get_backend_name() == "postgresql":
        return PostgresLeaderLock(engine, lease_s=lease_s)
    database = url.database or "memory"
    if database == "memory" or database == ":memory:":
        return FileLeaderLock(var_dir / "memory.scheduler.lock")
    db_path = Path(database)
    return FileLeaderLock(db_path.parent / f"{db_path.name}.scheduler.lock", engine)


__all__ = [
    "LeaderLock",
    "leader_lock_for",
]
