"""Edges of the scheduling core that the rule and property tests left open (found by
mutation testing, bench/mutation.py): exact fits against holds, the second planned start,
preemption attempts, reservations closing, snapshot loading, fair share per user, and the
fractional placers' corner cases."""

from __future__ import annotations

import pytest

from gpucenter.core import (
    AdvanceReservation,
    FairShare,
    Policies,
    RunningJob,
    Scheduler,
    ShareAccount,
    compute_factors,
    schedule_pass,
)
from gpucenter.core.fractional import BestFitPlacer, ShareCluster, ShareNode, ShareRequest
from gpucenter.core.model import NodeGpus, NodeSnapshot
from gpucenter.core.plancache import gang_cacheable
from gpucenter.core.state import ClusterState
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.ids import JobId, ProjectId, UserId
from gpucenter.domain.jobs import WaitReason
from tests.core.builders import T0, cluster, job


def test_a_backfill_job_that_exactly_fills_the_node_beside_a_hold_starts() -> None:
    """8 GPUs; 6 busy for an hour; the top job (6 GPUs) is planned at +1h. A 2-GPU job that
    runs past that still fits: 2 + 6 = 8 GPUs at +1h."""
    snap = cluster().nodes(1).busy("n0", 6, limit=3700).snapshot()
    top = job(1, gpus=6, limit=3600, qos="high")
    small = job(2, gpus=2, limit=7200)
    result = schedule_pass(snap, [top, small], T0)
    assert [s.job_id for s in result.starts] == [2]
    assert [(p.job_id, p.start_at) for p in result.planned] == [(1, T0 + 3600)]


def test_the_second_blocked_job_of_the_same_shape_is_planned_after_the_first() -> None:
    snap = cluster().nodes(1).busy("n0", limit=3700).snapshot()
    first = job(1, gpus=8, limit=3600, submitted=T0 - 20)
    second = job(2, gpus=8, limit=3600, submitted=T0 - 10)
    result = schedule_pass(snap, [first, second], T0)
    assert [(p.job_id, p.start_at) for p in result.planned] == [(1, T0 + 3600), (2, T0 + 7200)]


def test_a_preemption_attempt_is_only_spent_where_something_can_be_preempted() -> None:
    """One attempt allowed. The top job's type has nothing preemptible; the next job's type
    runs opportunistic work, which it may preempt."""
    snap = (
        cluster()
        .nodes(1, gpu_type="h100", prefix="h")
        .nodes(1, gpu_type="b200", prefix="b")
        .busy("h0", limit=36000)
        .busy("b0", limit=36000, qos="opportunistic")
        .snapshot()
    )
    queue = [
        job(1, gpus=8, gpu_type="h100", qos="high"),
        job(2, gpus=8, gpu_type="b200"),
    ]
    result = schedule_pass(snap, queue, T0, policy=Policies(max_preemption_attempts=1))
    assert [(p.for_job, p.requeue_at) for p in result.preemptions] == [(2, T0 + 300)]


def test_nodes_come_back_to_everyone_when_the_first_reservation_ends() -> None:
    resv = AdvanceReservation("r0", ("n0",), frozenset({ProjectId(1)}), T0, T0 + 1000)
    sched = Scheduler(cluster().nodes(1).snapshot().nodes, reservations=[resv])
    sched.submit(job(5, gpus=8, project=2, limit=600))
    during = sched.run_pass(T0 + 10)
    assert not during.starts
    after = sched.run_pass(T0 + 2000)
    assert [s.job_id for s in after.starts] == [5]


def test_a_running_job_off_the_lowest_gpus_is_loaded_and_respected() -> None:
    snap = cluster().nodes(1).snapshot()
    held = RunningJob(JobId(77), ProjectId(9), (NodeGpus("n0", (4, 5, 6, 7)),), T0 - 10, 3600)
    result = schedule_pass(type(snap)(snap.nodes, (held,)), [job(1, gpus=4), job(2, gpus=1)], T0)
    assert [(s.job_id, s.placement[0].gpus) for s in result.starts] == [(1, (0, 1, 2, 3))]
    assert result.waits[JobId(2)].reason is WaitReason.RESOURCES


def test_add_running_counts_towards_a_project_limit_until_it_finishes() -> None:
    policy = Policies(project_gpu_limits={ProjectId(1): {"h100": 4}})
    sched = Scheduler(cluster().nodes(2).snapshot().nodes, policy=policy)
    sched.add_running(
        RunningJob(JobId(50), ProjectId(1), (NodeGpus("n0", (0, 1, 2, 3)),), T0, 3600)
    )
    with pytest.raises(ValidationError):
        sched.add_running(RunningJob(JobId(50), ProjectId(1), (NodeGpus("n1", (0,)),), T0, 3600))
    sched.submit(job(1, gpus=1, project=1))
    assert sched.run_pass(T0).waits[JobId(1)].reason is WaitReason.QUOTA_LIMIT
    sched.finish(JobId(50))
    assert [s.job_id for s in sched.run_pass(T0 + 1).starts] == [1]


def test_the_order_of_the_queue_is_the_priority_a_user_is_shown() -> None:
    """Including a job larger than the cluster, whose size factor is capped at 1."""
    sched = Scheduler(cluster().nodes(1).snapshot().nodes)
    queue = [job(1, gpus=8, nodes=3), job(2, gpus=1), job(3, gpus=8)]
    for j in queue:
        sched.submit(j)
    result = sched.run_pass(T0)
    for j in queue:
        assert sched.queue.pending.get(j.job_id) is None or sched.queue.pending[
            j.job_id
        ].prio == pytest.approx(result.priorities[j.job_id].total)
    assert result.priorities[JobId(1)].job_size == 1.0


def test_a_job_cannot_be_queued_twice() -> None:
    sched = Scheduler(cluster().nodes(1).snapshot().nodes)
    sched.submit(job(1))
    with pytest.raises(ValidationError) as err:
        sched.submit(job(1))
    assert (err.value.field, err.value.message) == ("job_id", "job 1 is already pending")


def test_fragmentation_counts_every_free_gpu() -> None:
    snap = cluster().nodes(3).busy("n0", 6).busy("n1", 4).busy("n2", 8).snapshot()
    result = schedule_pass(snap, [job(1, gpus=8)], T0)
    assert (result.fragmentation.free_gpus, result.fragmentation.unusable_gpus) == (6, 6)


def test_user_leaves_rank_users_of_one_project_by_their_own_usage() -> None:
    root = ShareAccount(
        "root",
        children=(
            ShareAccount(
                "prog",
                children=(
                    ShareAccount(
                        "p1",
                        project_id=ProjectId(1),
                        children=(
                            ShareAccount("a-heavy", user_id=UserId(1)),
                            ShareAccount("b-light", user_id=UserId(2)),
                        ),
                    ),
                ),
            ),
        ),
    )
    usage = {(ProjectId(1), UserId(1)): 1e6, (ProjectId(1), UserId(2)): 10.0}
    factors = compute_factors(FairShare(root, usage={ProjectId(1): 1e6}, user_usage=usage))
    light = factors.by_user[(ProjectId(1), UserId(2))]
    heavy = factors.by_user[(ProjectId(1), UserId(1))]
    assert light > heavy
    assert factors.programme_of[ProjectId(1)] == "prog"


def test_duplicate_node_names_are_refused() -> None:
    with pytest.raises(ValidationError) as err:
        ClusterState([NodeSnapshot("n0", "h100", 8), NodeSnapshot("n0", "h100", 8)])
    assert (err.value.field, err.value.message) == ("nodes", "duplicate node name 'n0'")


def test_a_block_listed_again_later_is_the_same_block() -> None:
    st = ClusterState(
        [
            NodeSnapshot("a0", "h100", 8, block="x"),
            NodeSnapshot("b0", "h100", 8, block="y"),
            NodeSnapshot("a1", "h100", 8, block="x"),
        ]
    )
    assert st.block[0] == st.block[2] != st.block[1]
    assert len(st.block_names) == 2


def test_a_gang_plan_is_cacheable_only_without_held_nodes_in_a_big_enough_site() -> None:
    st = ClusterState([NodeSnapshot(f"n{i}", "h100", 8) for i in range(3)])
    assert gang_cacheable(st, {0, 1, 2}, 2)
    st.add_hold(0, (T0 + 100, T0 + 200, 8, 1, -1))
    assert not gang_cacheable(st, {0, 1, 2}, 2)
    assert gang_cacheable(st, {0, 1, 2}, 4)


def test_cpu_only_pods_fit_any_node_with_cpu_and_memory() -> None:
    c = ShareCluster([ShareNode("n0", "T4", 1, 4000, 1000)])
    assert c.fits(0, ShareRequest(1000, 500))
    assert not c.fits(0, ShareRequest(5000, 0))


def test_best_fit_can_choose_the_first_node() -> None:
    c = ShareCluster([ShareNode("n0", "T4", 1, 4000, 1000), ShareNode("n1", "T4", 2, 4000, 1000)])
    c.place(1, ShareRequest(0, 0, 1, 1000), (0,))
    c.place(1, ShareRequest(0, 0, 1, 500), (1,))
    got = BestFitPlacer(1).choose(c, ShareRequest(100, 0, 1, 1000))
    assert got == (0, (0,))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 0, 0, 0), "CPU, memory and GPU counts must not be negative"),
        ((0, 0, 2, 500), "a share of a GPU is requested on one GPU only"),
    ],
)
def test_share_request_refusals_say_why(args: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(ValueError) as err:
        ShareRequest(*args)
    assert str(err.value) == message


def test_classic_fair_share_gives_each_member_their_part_of_the_project() -> None:
    """2^(-U/S) for users too: one project, two members with a share each; the member who
    used all of it has U = 1, S = 1/2, so 2^-2; the other 2^0."""
    from gpucenter.core.fairshare_classic import CLASSIC
    from gpucenter.core.share_tree import ShareHolder, build_share_tree

    root = build_share_tree(
        [
            ShareHolder(
                "prog", "org", "p1", ProjectId(1), 10.0, ((UserId(1), "u1"), (UserId(2), "u2"))
            )
        ]
    )
    got = CLASSIC.factors(
        FairShare(
            root,
            usage={ProjectId(1): 100.0},
            user_usage={(ProjectId(1), UserId(1)): 100.0},
        )
    )
    assert got.by_project[ProjectId(1)] == pytest.approx(0.5)
    assert got.by_user[(ProjectId(1), UserId(1))] == pytest.approx(0.25)
    assert got.by_user[(ProjectId(1), UserId(2))] == pytest.approx(1.0)
