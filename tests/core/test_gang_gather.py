"""`Planner._gang` (the earliest start of a gang) answers what the plain gathering answers:
the window filter re-run over every member of the site, groups rebuilt at every step. The
incremental version skips re-testing unheld members that already passed; these random
clusters with holds, multiple sites and `max_blocks` limits check that nothing changes."""

from __future__ import annotations

import math
import random

from gpucenter.core.model import NodeSnapshot
from gpucenter.core.placement import pick_groups
from gpucenter.core.pools import Pool
from gpucenter.core.state import ClusterState
from gpucenter.core.timeline import Planner, fits_window
from gpucenter.domain.ids import JobId
from tests.core.builders import T0

INF = math.inf


def _reference(
    planner: Planner, pool: Pool, k: int, length: float, max_blocks: int | None
) -> tuple[float, list[int]]:
    """The gathering as it was first written (quadratic in the nodes yielded)."""
    st = planner.st
    by_site: dict[int, list[int]] = {}
    it = planner.scan(pool, pool.size, length)
    try:
        for t, n in it:
            if t == INF:
                break
            members = by_site.setdefault(st.site[n], [])
            members.append(n)
            if len(members) >= k and any(m in st.future for m in members):
                members[:] = [
                    m for m in members if fits_window(st, m, pool.size, t, length, planner.now)
                ]
            if len(members) >= k:
                groups: dict[int, list[int]] = {}
                for m in members:
                    groups.setdefault(st.block[m], []).append(m)
                chosen, blocks = pick_groups(groups, k)
                if max_blocks is None or blocks <= max_blocks:
                    return t, chosen
    finally:
        it.close()
    return INF, []


def _random_state(rng: random.Random) -> ClusterState:
    count = rng.randint(4, 40)
    nodes = [
        NodeSnapshot(f"n{i}", "h100", 4, f"b{i // rng.choice((2, 3, 4))}", f"s{i % 2}")
        for i in range(count)
    ]
    st = ClusterState(nodes)
    for n in range(count):
        if rng.random() < 0.6:
            k = rng.randint(1, 4)
            end = T0 + rng.choice((-10, 0, 100, 600, 1800, 3600, 7200))
            st.take(n, tuple(st.free[n][:k]), JobId(n), end)
        for h in range(rng.choice((0, 0, 0, 1, 2))):
            start = T0 + rng.choice((0, 200, 700, 2000, 4000))
            st.add_hold(n, (start, start + rng.choice((300, 1000, 5000)), 4, 900 + h, -1))
    return st


def test_gang_gathering_matches_the_plain_gathering() -> None:
    rng = random.Random(17)
    found = filtered = 0
    for _ in range(1500):
        st = _random_state(rng)
        pool = st.pools[0]
        k = rng.randint(1, 8)
        length = rng.choice((100.0, 900.0, 3000.0))
        max_blocks = rng.choice((None, 1, 2, 3))
        now = T0 + rng.choice((0.0, 50.0))
        fast, plain = Planner(st, keep=False), Planner(st, keep=False)
        for planner in (fast, plain):
            planner.begin(now, {})
        want = _reference(plain, pool, k, length, max_blocks)
        got = fast.earliest_gang(pool, k, length, max_blocks)
        assert got == want
        found += want[0] < INF
        filtered += bool(st.future)
    assert found > 300 and filtered > 300
