"""One cadence for the server and the simulator: `PassCadence` and quick `schedule_pass`."""

from __future__ import annotations

from gpucenter.core import PassCadence, Scheduler, schedule_pass
from tests.core.builders import T0, cluster, job


def test_default_is_a_backfill_pass_every_time() -> None:
    c = PassCadence()
    assert all(c.backfill_now(T0 + dt) for dt in (0.0, 0.0, 0.5, 1.0, 1.0))
    c.after_pass(True, jobs_waiting=True)
    assert c.wake_at() is None


def test_interval_alternates_and_asks_to_be_woken() -> None:
    c = PassCadence(30.0)
    assert c.backfill_now(T0)
    c.after_pass(True, jobs_waiting=True)
    assert c.wake_at() is None  # a backfill pass already saw the waiting jobs
    assert not c.backfill_now(T0 + 10)
    c.after_pass(False, jobs_waiting=True)
    assert c.wake_at() == T0 + 30
    assert not c.backfill_now(T0 + 29.9)
    c.after_pass(False, jobs_waiting=False)
    assert c.wake_at() is None
    assert c.backfill_now(T0 + 30)
    assert not c.backfill_now(T0 + 31)


def test_schedule_pass_quick_is_what_a_kept_scheduler_does() -> None:
    """The server's throw-away pass, asked for a quick pass, decides as the simulator's
    kept scheduler does in its quick pass: the blocked top job closes its type, so the
    small job behind it is not backfilled until the next backfill pass."""
    snap = cluster().nodes(2, gpus=8).busy("n0", 4, limit=7200).snapshot()
    queue = [job(1, gpus=8, nodes=2, submitted=T0 - 900), job(2, gpus=1, limit=600)]
    full = schedule_pass(snap, queue, T0)
    quick = schedule_pass(snap, queue, T0, backfill=False)
    assert [int(s.job_id) for s in full.starts] == [2]  # backfilled behind job 1's plan
    assert quick.starts == () and not quick.planned
    kept = Scheduler(snap.nodes, running=snap.running)
    kept.submit(queue[0])
    assert not kept.run_pass(T0 - 1).starts  # its first pass is always a backfill pass
    kept.submit(queue[1])
    assert kept.run_pass(T0, backfill=False).starts == quick.starts == ()
    assert [int(s.job_id) for s in kept.run_pass(T0 + 1).starts] == [2]
