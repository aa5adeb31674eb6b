"""Fencing: a deposed scheduler leader's writes never land.

Leadership alone is not enough: a leader whose process was paused (SIGSTOP, a VM migration,
a long GC) or whose host stopped answering can wake up after another server took over and
go on writing what it decided long ago -- start a job a second time, charge a run twice.
So every leadership comes with an *epoch* (`scheduler_leader.epoch`, one more each time a
server takes it), and every transaction the scheduler commits checks, as its last statement
before COMMIT, that the epoch is still its own (`Fence.check`):

- PostgreSQL: ``SELECT epoch ... FOR KEY SHARE``. The lock is held until the transaction
  ends, and a server taking the leadership first locks the row ``FOR UPDATE``, so it waits
  for every fenced transaction in flight; once the epoch has moved on, the old leader's
  next check reads the new value and its transaction rolls back (`Deposed`).
- SQLite: the check runs after the transaction's writes were flushed, so it holds SQLite's
  one write lock: no other leader can commit an epoch change between the check and COMMIT.

`Fence.epoch` is None until the scheduler loop takes the leadership (tests and commands that
call a pass directly run unfenced). The loop sets it and clears it when it steps down.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.persistence.tables_ops import SchedulerLeaderRow

__all__ = ["LEADER_ROW", "Deposed", "Fence", "fenced"]

LEADER_ROW = 1


class Deposed(RuntimeError):
    """A newer scheduler leader exists: this server's write was refused (rolled back)."""


class Fence:
    """The epoch this server leads under, or None while it does not lead."""

    def __init__(self, epoch: int | None = None) -> None:
        self._epoch = epoch
        self._ever = epoch is not None
        self._lock = threading.Lock()

    @property
    def epoch(self) -> int | None:
        return self._epoch

    def hold(self, epoch: int) -> None:
        """This server took the leadership with `epoch`."""
        with self._lock:
            self._epoch = epoch
            self._ever = True

    def drop(self) -> None:
        """This server no longer leads: its scheduler writes are refused from now on."""
        with self._lock:
            self._epoch = None

    def reset(self) -> None:
        """Back to unfenced (the loop stopped cleanly: nothing of it writes any more)."""
        with self._lock:
            self._epoch = None
            self._ever = False

    @property
    def active(self) -> bool:
        """True once the server has led at least once: from then on a write made while it
        does not lead is refused, not let through unfenced."""
        return self._ever

    def check(self, s: Session) -> None:
        """Raise `Deposed` unless the epoch in the database is still ours (see the module
        docstring for why this holds until the transaction ends). No-op when unfenced."""
        if not self.active:
            return
        mine = self._epoch
        if mine is None:
            raise Deposed("this server no longer leads the scheduler")
        s.flush()  # SQLite: take the write lock before reading the epoch
        stmt = select(SchedulerLeaderRow.epoch).where(SchedulerLeaderRow.id == LEADER_ROW)
        if s.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(read=True, key_share=True)
        found = s.scalar(stmt)
        if found != mine:
            raise Deposed(f"scheduler epoch is {found}, this server led under {mine}")


@contextmanager
def fenced(sessions: sessionmaker[Session], fence: Fence) -> Iterator[Session]:
    """A transaction that commits only while `fence`'s epoch is current (else `Deposed`,
    and nothing of it is written)."""
    with sessions.begin() as s:
        yield s
        fence.check(s)
