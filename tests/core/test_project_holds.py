"""A held project's jobs wait with the Held reason and the programme's sentence (a report is
overdue), in full and quick passes, among many identical jobs, and behind a shape the walk
already knows is blocked for others; nobody else's jobs are held, and a held job's GPUs go to
the next in line."""

from __future__ import annotations

from gpucenter.core import Policies, Scheduler, schedule_pass
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import WaitReason
from tests.core.builders import T0, cluster, job

WHY = "held: the progress report of award 7 was due 2026-05-01"
HELD = Policies(project_holds={ProjectId(1): WHY})


def test_a_held_project_waits_and_the_next_job_gets_its_gpus() -> None:
    snap = cluster().nodes(1, gpus=8).snapshot()
    result = schedule_pass(
        snap, [job(1, gpus=8, project=1), job(2, gpus=8, project=2)], T0, policy=HELD
    )
    assert {s.job_id for s in result.starts} == {JobId(2)}
    wait = result.waits[JobId(1)]
    assert wait.reason is WaitReason.HELD and wait.detail == WHY


def test_many_identical_jobs_of_held_and_free_projects() -> None:
    snap = cluster().nodes(4, gpus=8).snapshot()
    queue = [
        job(i, gpus=1, project=1 if i % 2 else 2, submitted=T0 - 100 + i) for i in range(1, 41)
    ]
    result = schedule_pass(snap, queue, T0, policy=HELD)
    started = {int(s.job_id) for s in result.starts}
    assert started == {i for i in range(1, 41) if i % 2 == 0}
    assert all(result.waits[JobId(i)].reason is WaitReason.HELD for i in range(1, 41, 2))


def test_a_quick_pass_holds_too_and_the_hold_lifts_with_the_policy() -> None:
    sched = Scheduler(cluster().nodes(1, gpus=8).snapshot().nodes, policy=HELD)
    sched.submit(job(1, gpus=2, project=1))
    sched.run_pass(T0)
    sched.submit(job(2, gpus=2, project=1))
    quick = sched.run_pass(T0 + 1, backfill=False)
    assert quick.waits[JobId(2)].reason is WaitReason.HELD
    free = Scheduler(cluster().nodes(1, gpus=8).snapshot().nodes, policy=Policies())
    free.submit(job(1, gpus=2, project=1))
    assert {s.job_id for s in free.run_pass(T0).starts} == {JobId(1)}


def test_a_shape_already_blocked_for_others_still_says_held() -> None:
    # The cluster is full; forty free jobs of one shape come first and the walk learns the
    # shape cannot start (answering the rest of that shape in bulk). The held project's jobs
    # of the same shape come after them and must still say why they really wait.
    snap = cluster().nodes(1, gpus=8).busy("n0").snapshot()
    free = [job(i, gpus=1, project=2, submitted=T0 - 200 + i) for i in range(1, 41)]
    held = [job(i, gpus=1, project=1, submitted=T0 - 100 + i) for i in range(41, 61)]
    result = schedule_pass(snap, free + held, T0, policy=HELD)
    assert not result.starts
    assert {result.waits[JobId(i)].reason for i in range(1, 41)} == {WaitReason.RESOURCES}
    for i in range(41, 61):
        assert result.waits[JobId(i)].reason is WaitReason.HELD
        assert result.waits[JobId(i)].detail == WHY
