"""Database faults on demand, for tests/resilience/test_db_faults.py.

`PgProxy` is a TCP proxy in front of PostgreSQL: a server process connects through it, and a
test arms it to cut the connection when the client sends a statement that matches a
pattern, either *before* forwarding it (the transaction is lost: PostgreSQL rolls it back) or
*after* (the statement, or the COMMIT, runs; only its answer is lost).

`EngineFaults` does the same inside this process, on one SQLAlchemy engine: end the
connection's backend (pg_terminate_backend, from another connection) just before a
matching statement, or let a COMMIT succeed and then report the connection lost.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine.url import make_url


@dataclass
class _Arm:
    pattern: bytes
    after: bool


class PgProxy:
    """127.0.0.1:<port> -> PostgreSQL, one thread pair per connection."""

    def __init__(self, upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self._upstream = upstream
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._armed: _Arm | None = None
        self._lock = threading.Lock()
        self._closing = False
        self.tripped = threading.Event()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database_url: str) -> str:
        """The same database, through the proxy (no TLS, so that statements can be seen)."""
        url = make_url(database_url).set(host="127.0.0.1", port=self.port)
        query = dict(url.query) | {"sslmode": "disable"}
        return url.set(query=query).render_as_string(hide_password=False)

    def arm(self, pattern: str, *, after: bool) -> None:
        """Cut the next connection that sends `pattern`, before or after forwarding it."""
        self.tripped.clear()
        with self._lock:
            self._armed = _Arm(pattern.encode(), after)

    def close(self) -> None:
        self._closing = True
        self._listener.close()
        for conn in list(self._conns):
            _close(conn)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            self._conns += [client, server]
            muted = threading.Event()  # set: PostgreSQL's answers no longer reach the client
            threading.Thread(target=self._up, args=(client, server, muted), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, muted), daemon=True).start()

    def _trip(self, chunk: bytes) -> _Arm | None:
        with self._lock:
            arm = self._armed
            if arm is None or arm.pattern not in chunk:
                return None
            self._armed = None
            return arm

    def _up(self, client: socket.socket, server: socket.socket, muted: threading.Event) -> None:
        arm: _Arm | None = None
        try:
            while chunk := client.recv(65536):
                arm = self._trip(chunk)
                if arm is not None and not arm.after:
                    break  # never reaches PostgreSQL
                if arm is not None:
                    muted.set()
                server.sendall(chunk)
                if arm is not None:
                    # Let PostgreSQL run it (and COMMIT, in autocommit), then cut the client
                    # off: it never hears the answer.
                    threading.Event().wait(0.5)
                    break
        except OSError:
            arm = None
        if arm is not None:
            self.tripped.set()
        _close(client)
        _close(server)

    def _down(self, server: socket.socket, client: socket.socket, muted: threading.Event) -> None:
        try:
            while chunk := server.recv(65536):
                if muted.is_set():
                    continue
                client.sendall(chunk)
        except OSError:
            pass
        _close(client)
        _close(server)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@dataclass
class EngineFaults:
    """Faults injected into the statements and COMMITs of one engine (PostgreSQL)."""

    engine: Engine
    admin_url: str
    _kill_on: re.Pattern[str] | None = None
    _lose_commit_after: re.Pattern[str] | None = None
    _seen: dict[int, bool] = field(default_factory=dict)
    fired: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        event.listen(self.engine, "before_cursor_execute", self._before)
        dialect = self.engine.dialect
        real_commit = dialect.do_commit

        def do_commit(pooled: Any) -> None:
            real_commit(pooled)
            raw = getattr(pooled, "dbapi_connection", pooled)
            if self._lose_commit_after is not None and self._seen.pop(id(raw), False):
                self._lose_commit_after = None
                self.fired.append("commit answer lost")
                raw.close()  # the connection is gone with the answer
                raise psycopg.OperationalError("server closed the connection unexpectedly")

        dialect.do_commit = do_commit  # type: ignore[method-assign]

    def kill_before(self, pattern: str) -> None:
        """End the backend just before the next statement matching `pattern` runs."""
        self._kill_on = re.compile(pattern, re.I | re.S)

    def lose_commit_after(self, pattern: str) -> None:
        """The next transaction that runs a statement matching `pattern` commits, and its
        COMMIT's answer is lost (the client sees the connection drop)."""
        self._lose_commit_after = re.compile(pattern, re.I | re.S)

    def _before(self, conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        raw = conn.connection.dbapi_connection
        if self._lose_commit_after is not None and self._lose_commit_after.search(statement):
            self._seen[id(raw)] = True
        if self._kill_on is not None and self._kill_on.search(statement):
            self._kill_on = None
            pid = raw.info.backend_pid
            admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            admin.dispose()
            self.fired.append(f"connection ended before: {statement[:60]}")


@contextmanager
def row_locked(url: str, sql: str, params: dict[str, Any]) -> Iterator[None]:
    """Hold `sql`'s row lock from another connection for the duration (to make a
    statement of the code under test wait past its statement_timeout)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        conn.execute(text(sql), params)
        try:
            yield
        finally:
            conn.rollback()
    engine.dispose()
