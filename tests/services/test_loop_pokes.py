"""Pokes reach the leader wherever it runs on this host: a follower's poke (a job was just
submitted to it) makes the leader's loop run a pass now rather than at its next tick."""

from __future__ import annotations

import sys
import time

import pytest

from gpucenter.config import Settings
from gpucenter.services.scheduling.loop import SchedulerLoop, poke_address
from tests.factories import make_context, wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="abstract Unix sockets are Linux-only"
)


class FixedLock:
    """A leader lock that is held, or not, as the test says."""

    epoch = None  # no epoch: the loop runs unfenced

    def __init__(self, held: bool) -> None:
        self.held = held

    tries = 0

    def try_acquire(self) -> bool:
        self.tries += 1
        return self.held

    def still_held(self) -> bool:
        return self.held

    def release(self) -> None:
        self.held = False


def test_a_followers_poke_wakes_the_leader(settings: Settings) -> None:
    ctx = make_context(settings)
    leader = SchedulerLoop(ctx, interval_s=60, lock=FixedLock(True))
    follower = SchedulerLoop(ctx, interval_s=60, lock=FixedLock(False))
    leader.start()
    follower.start()
    try:
        wait_until(lambda: leader.passes >= 1 and follower.tried.is_set(), timeout=10)
        assert leader.is_leader and not follower.is_leader
        before = leader.passes
        follower.poke()  # without the forwarded poke the next pass is 60 s away
        wait_until(lambda: leader.passes > before, timeout=10, step=0.02)
    finally:
        follower.stop()
        leader.stop()
        ctx.dispatcher.shutdown()
        ctx.engine.dispose()


def test_a_burst_of_pokes_costs_a_follower_one_datagram_and_no_lock_tries(
    settings: Settings,
) -> None:
    """A follower's pokes are for the leader: the follower does not wake to try the lock
    (each try opens a database connection), and a burst sends one datagram, not one per
    submission (the leader passes no more often than that anyway)."""
    ctx = make_context(settings)
    lock = FixedLock(False)
    follower = SchedulerLoop(ctx, interval_s=60, lock=lock)
    follower.start()
    sent: list[bytes] = []

    class Counting:
        def sendto(self, data: bytes, address: str) -> None:
            sent.append(data)

    try:
        wait_until(lambda: follower.tried.is_set(), timeout=10)
        tries = lock.tries
        follower._poke_out = Counting()  # type: ignore[assignment]
        for _ in range(500):
            follower.poke()
        assert len(sent) == 1
        time.sleep(0.3)
        assert lock.tries == tries  # its next try is at its tick, 60 s away
        time.sleep(0.1)
        follower.poke()  # a poke after the gap is sent
        assert len(sent) == 2
    finally:
        follower.stop()
        ctx.dispatcher.shutdown()
        ctx.engine.dispose()


def test_the_address_is_per_database() -> None:
    first = poke_address("sqlite:////srv/a.db")
    assert first is not None and first.startswith("\0")
    assert first == poke_address("sqlite:////srv/a.db")
    assert first != poke_address("sqlite:////srv/b.db")
