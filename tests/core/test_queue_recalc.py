"""A priority recalculation that moves nothing keeps the queue's ranks and per-shape lists;
one that moves anything re-sorts. Either way the queue ends as a re-sort from scratch would
leave it: the order by the full key, ranks increasing along it, and the same lists."""

from __future__ import annotations

import itertools
import random

import pytest

from gpucenter.core.policy import Policies, PriorityWeights
from gpucenter.core.queue import JobQueue, QueuedJob
from gpucenter.domain.ids import ProjectId, UserId
from tests.core.builders import T0, job

MAX_AGE = 600.0


def _fair_share(table: dict[int, float]):  # type: ignore[no-untyped-def]
    def factor(project: ProjectId, user: UserId | None) -> float:
        return table[int(project)] + (0.01 * int(user) if user is not None else 0.0)

    return factor


def _live(jq: JobQueue) -> list[QueuedJob]:
    return [q for q in jq.order if not q.done]


def _groups(jq: JobQueue) -> dict[tuple[object, ...], list[int]]:
    """The per-shape lists keyed by what the shape is (shape ids differ between queues)."""
    groups, _ = jq.streams()
    out: dict[tuple[object, ...], list[int]] = {}
    for (_, limit), members in groups.items():
        ids = [q.id for q in members if not q.done]
        if ids:
            sh = members[0].shape
            out[(sh.types, sh.gpn, sh.nodes, sh.max_blocks, sh.opp, limit)] = ids
    return out


def _check_against_fresh(jq: JobQueue, now: float, fair_share) -> None:  # type: ignore[no-untyped-def]
    live = _live(jq)
    assert [q.id for q in live] == [q.id for q in sorted(live, key=lambda q: q.key)]
    ranks = [q.rank for q in live]
    assert all(a < b for a, b in itertools.pairwise(ranks))
    fresh = JobQueue(jq.policy, jq.cluster_gpus)
    fresh.set_solo_projects(jq.solo_projects)
    fresh.load(q.src for q in jq.pending.values())
    fresh.reprioritise(now, fair_share)
    assert [q.id for q in live] == [q.id for q in fresh.order]
    assert [q.prio for q in live] == [q.prio for q in fresh.order]
    assert _groups(jq) == _groups(fresh)
    assert [q.id for q in jq.solo if not q.done] == [q.id for q in fresh.solo]


@pytest.mark.parametrize("capped", [True, False], ids=["jobs-reach-age-cap", "below-cap"])
@pytest.mark.parametrize("seed", range(8))
def test_recalculation_leaves_the_queue_as_a_fresh_sort_would(seed: int, capped: bool) -> None:
    """With a short age cap, jobs reach it and ties are common (the full re-sort); below the
    cap, steps where only time moved keep the ranks and lists."""
    rng = random.Random(seed)
    policy = Policies(weights=PriorityWeights(max_age_s=MAX_AGE if capped else 1e9))
    jq = JobQueue(policy, 64)
    jq.set_solo_projects(frozenset({ProjectId(3)}))
    table = {p: rng.random() for p in range(6)}
    now = T0
    next_id = 0

    def new_job() -> None:
        nonlocal next_id
        next_id += 1
        # Whole seconds and few projects make equal priorities; below the cap, ties are rare.
        offset = rng.randrange(0, 3) * 100 if capped else rng.uniform(0, 300)
        jq.submit(
            job(
                next_id,
                rng.choice((1, 2, 8)),
                rng.choice((1, 1, 2)),
                project=rng.randrange(6),
                submitted=now - offset,
                qos=rng.choice(("normal",) * 5 + ("opportunistic",)),
                user=rng.choice((None, 1, 2)),
                budget=rng.choice((None,) * 6 + (1e6,)),
            ),
            _fair_share(table),
        )

    for _ in range(60):
        new_job()
    jq.reprioritise(now, _fair_share(table))
    _check_against_fresh(jq, now, _fair_share(table))
    kept = moved = 0
    for step in range(40):
        now += rng.choice((10.0, 60.0, 250.0))
        if rng.random() < 0.3:  # new usage: factors change
            table = {p: rng.random() for p in range(6)}
        if rng.random() < 0.5:
            for _ in range(rng.randrange(4)):
                new_job()
        if rng.random() < 0.5:
            for q in rng.sample(list(jq.pending.values()), min(3, len(jq.pending))):
                jq.withdraw(q.id)
        if step % 7 == 6:
            jq.compact(force=True)
        before = jq.groups
        jq.reprioritise(now, _fair_share(table))
        if jq.groups is before:
            kept += 1
        else:
            moved += 1
        _check_against_fresh(jq, now, _fair_share(table))
    assert moved > 0
    if not capped:
        assert kept > 0


def test_only_time_moving_keeps_ranks_and_lists() -> None:
    """Every job below the age cap gains the same age: nothing moves, nothing is rebuilt."""
    policy = Policies(weights=PriorityWeights(max_age_s=10 * 86400.0))
    jq = JobQueue(policy, 64)
    fair_share = _fair_share({p: p / 10 for p in range(5)})
    for i in range(200):
        jq.submit(job(i, 1 + i % 3, project=i % 5, submitted=T0 - 37.0 * i), fair_share)
    jq.reprioritise(T0, fair_share)
    groups, ranks = jq.groups, [q.rank for q in jq.order]
    jq.reprioritise(T0 + 3600, fair_share)
    assert jq.groups is groups
    assert [q.rank for q in jq.order] == ranks
    assert jq.prio_at == T0 + 3600
    _check_against_fresh(jq, T0 + 3600, fair_share)


def test_a_job_reaching_the_age_cap_is_moved() -> None:
    """At the cap a job stops gaining age, so jobs below it may overtake it: full re-sort."""
    policy = Policies(weights=PriorityWeights(max_age_s=MAX_AGE))
    jq = JobQueue(policy, 64)
    fair_share = _fair_share({1: 0.5, 2: 0.504})
    jq.submit(job(1, project=1, submitted=T0 - MAX_AGE + 5), fair_share)
    jq.submit(job(2, project=2, submitted=T0 - MAX_AGE + 50), fair_share)
    jq.reprioritise(T0, fair_share)
    assert [q.id for q in jq.order] == [1, 2]
    groups = jq.groups
    jq.reprioritise(T0 + 40, fair_share)  # job 1 capped at +5 s, job 2 gains all 40 s
    assert [q.id for q in jq.order] == [2, 1]
    assert jq.groups is not groups
    _check_against_fresh(jq, T0 + 40, fair_share)
