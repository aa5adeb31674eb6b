"""Pokes reach the leader wherever it runs on this host: a follower's poke (a job was just
submitted to it) makes the leader's loop run a pass now rather than at its next tick."""

from __future__ import annotations

import sys

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

    def try_acquire(self) -> bool:
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


def test_the_address_is_per_database() -> None:
    first = poke_address("sqlite:////srv/a.db")
    assert first is not None and first.startswith("\0")
    assert first == poke_address("sqlite:////srv/a.db")
    assert first != poke_address("sqlite:////srv/b.db")
