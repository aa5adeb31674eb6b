"""The bulk walk of a kept `Scheduler` answers exactly what a one-off pass answers."""

from __future__ import annotations

from gpucenter.core import PendingJob, Policies, build_scheduler, schedule_pass
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import WaitReason
from tests.core.builders import T0, cluster, job


def _queue() -> list[PendingJob]:
    jobs = []
    for i in range(300):
        nodes = 2 if i % 7 == 0 else 1
        gpus = 8 if nodes > 1 else (1, 2, 4, 8)[i % 4]
        jobs.append(
            job(
                i,
                gpus,
                nodes,
                project=i % 5,
                limit=(1, 2, 4)[i % 3] * 3600,
                submitted=T0 - 1000 + i,
                budget=50_000.0 if i % 11 == 0 else None,
                qos="opportunistic" if i % 13 == 0 else "normal",
            )
        )
    return jobs


def test_bulk_walk_matches_plain_walk() -> None:
    # `schedule_pass` walks job by job; a kept scheduler answers dead shapes in bulk.
    snap = cluster().nodes(16, block_size=4).busy([f"n{i}" for i in range(10)]).snapshot()
    policy = Policies(max_reservations=2, project_gpu_limits={ProjectId(3): {"h100": 16}})
    queue = _queue()
    plain = schedule_pass(snap, queue, T0, policy=policy)
    bulk = build_scheduler(snap, queue, policy=policy).run_pass(T0)
    assert bulk.starts == plain.starts
    assert list(bulk.waits.items()) == list(plain.waits.items())
    assert bulk.planned == plain.planned
    assert bulk.fragmentation == plain.fragmentation
    assert dict(bulk.priorities) == dict(plain.priorities)
    assert len(bulk.waits) > 100  # most of the queue waits, answered in bulk


def test_waits_snapshot_survives_later_changes() -> None:
    snap = cluster().nodes(2).busy(["n0", "n1"]).snapshot()
    queue = [job(i, 8, limit=3600) for i in range(50)]
    sched = build_scheduler(snap, queue, policy=Policies(max_reservations=1))
    result = sched.run_pass(T0)
    for i in range(10):
        sched.withdraw(JobId(i))
    sched.submit(job(999, 8))
    sched.run_pass(T0 + 30)
    assert set(result.waits) == {JobId(i) for i in range(50)}
    assert list(result.waits) == [JobId(i) for i in range(50)]
    assert result.waits[JobId(49)].reason is WaitReason.RESOURCES
