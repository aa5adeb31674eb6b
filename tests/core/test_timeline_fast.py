"""Fast paths (`timeline.node_earliest`, inlined hold changes, the queue's tie order) answer
exactly what the general code answers."""

from __future__ import annotations

import math
import random

from gpucenter.core.model import NodeSnapshot
from gpucenter.core.queue import QueuedJob, Shape, _order
from gpucenter.core.state import ClusterState, Hold
from gpucenter.core.timeline import node_earliest
from gpucenter.domain.ids import JobId
from tests.core.builders import T0, job

INF = math.inf


def _reference(st: ClusterState, n: int, g: int, now: float, length: float) -> float:
    """`node_earliest` as it was before the whole-node fast path (the general code)."""
    size = st.size[n]
    if g > size:
        return INF
    fut = st.future.get(n)
    if not fut:
        need = g - len(st.free[n])
        if need <= 0:
            return now
        acc = 0
        for e, used in sorted(st.run[n].values()):
            acc += used
            if acc >= need:
                return e if e > now else now
        return INF
    runs = list(st.run[n].values())
    holds = [(h[0], h[1], h[2]) for h in fut]

    def use_at(t: float) -> int:
        u = 0
        for e, k in runs:
            if e > t:
                u += k
        for h0, h1, k in holds:
            if h0 <= t < h1:
                u += k
        return u

    candidates = {now}
    for e, _ in runs:
        if e > now:
            candidates.add(e)
    for _, h1, _ in holds:
        if h1 > now:
            candidates.add(h1)
    room = size - g
    free_now = len(st.free[n])
    for c in sorted(candidates):
        if c == now and free_now < g:
            continue
        if use_at(c) > room:
            continue
        stop = c + length
        for h0, _, _ in holds:
            if c < h0 < stop and use_at(h0) > room:
                break
        else:
            return c
    return INF


def test_node_earliest_matches_the_general_code() -> None:
    rng = random.Random(11)
    whole = 0
    for _ in range(6000):
        size = rng.choice((1, 4, 8))
        st = ClusterState([NodeSnapshot("n0", "h100", size, "b0")])
        used = 0
        for j in range(rng.randint(0, 3)):
            k = rng.randint(1, size - used) if used < size else 0
            if not k:
                break
            end = T0 + rng.choice((-50, 0, 100, 600, 3600, 5000, INF))
            st.take(0, tuple(st.free[0][:k]), JobId(j), end)
            used += k
        for h in range(rng.randint(0, 4)):
            start = T0 + rng.choice((-100, 0, 100, 200, 700, 2000, 5000))
            span = rng.choice((0, 100, 300, 1000, 4000, -10))
            k = rng.choice((0, 1, size, rng.randint(1, size)))
            st.add_hold(0, (start, start + span, k, h, -1))
        for g in {1, size, rng.randint(1, size), size + 1}:
            for length in (0.0, 100.0, 500.0, 1500.0, 6000.0):
                for now in (T0, T0 + 100):
                    want = _reference(st, 0, g, now, length)
                    assert node_earliest(st, 0, g, now, length) == want
                    whole += g == size and 0 in st.future
    assert whole > 10_000


def _ref_add(st: ClusterState, n: int, hold: Hold) -> None:
    pool = st._unindex(n)
    st.future.setdefault(n, []).append(hold)
    st._reindex(n, pool)


def _ref_remove(st: ClusterState, n: int, hold: Hold) -> None:
    pool = st._unindex(n)
    holds = st.future[n]
    holds.remove(hold)
    if not holds:
        del st.future[n]
    st._reindex(n, pool)


def _indices(st: ClusterState) -> list[object]:
    out: list[object] = [st.version, {n: list(h) for n, h in st.future.items()}]
    for pool in st.pools:
        out += [list(pool.held), [list(d) for d in pool.partial], pool.count]
        out += [{b: list(m) for b, m in pool.whole.items()}, [list(d) for d in pool.bucket]]
        out += [pool.block_whole, pool.site_whole, pool.whole_total]
    return out


def test_inlined_hold_changes_keep_the_indices_of_the_general_path() -> None:
    rng = random.Random(3)
    nodes = [NodeSnapshot(f"n{i}", "h100", 4, f"b{i // 3}") for i in range(12)]
    fast, ref = ClusterState(nodes), ClusterState(nodes)
    for i in range(0, 12, 2):
        gpus = tuple(range(rng.randint(1, 4)))
        for st in (fast, ref):
            st.take(i, gpus, JobId(i), T0 + 600)
    live: list[tuple[int, Hold]] = []
    for step in range(3000):
        if live and rng.random() < 0.5:
            n, hold = live.pop(rng.randrange(len(live)))
            fast.remove_hold(n, hold)
            _ref_remove(ref, n, hold)
        else:
            n = rng.randrange(12)
            hold = (T0 + rng.randint(0, 9) * 100, T0 + 2000, rng.randint(1, 4), step, -1)
            live.append((n, hold))
            fast.add_hold(n, hold)
            _ref_add(ref, n, hold)
        assert _indices(fast) == _indices(ref)


def test_queue_order_breaks_priority_ties_by_the_full_key() -> None:
    rng = random.Random(9)
    shape = Shape(("h100",), 1, 1, None, False)
    opp = Shape(("h100",), 1, 1, None, True)
    jobs = []
    for i in range(2000):
        src = job(i, 1, 1, submitted=T0 - rng.randint(0, 5))
        q = QueuedJob(src, opp if rng.random() < 0.2 else shape)
        q.prio = rng.choice((0.0, -0.0, 0.25, 0.5, 0.5 + 1e-12, float(rng.randint(0, 50))))
        jobs.append(q)
    rng.shuffle(jobs)
    assert _order(jobs) == sorted(jobs, key=lambda q: q.key)
