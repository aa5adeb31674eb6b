"""Time: which future holds a start would delay, and when a node can next take a job.

A node's use over time is its running jobs (each until its time limit or requeue) plus its
future holds. Use only drops when a job ends and only rises when a hold begins, so checking
a candidate start against each hold's start instant inside the job's run is exact.

`Planner` answers "earliest start" for the top blocked jobs. It keeps, per (pool, GPUs, run
length), a heap of (earliest time, node, node version); entries go stale when the node
changes and are recomputed lazily when they reach the top, so the k earliest nodes cost
O(k log n) after a one-off O(n) build, instead of a scan of every node per reservation.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Generator

from gpucenter.core.placement import conflicting_hold, pick_groups
from gpucenter.core.pools import Pool
from gpucenter.core.state import ClusterState

INF = math.inf

__all__ = ["INF", "Planner", "conflicting_hold", "node_earliest"]


def node_earliest(st: ClusterState, n: int, g: int, now: float, length: float) -> float:
    """Earliest instant >= now at which `n` has `g` GPUs free for `length` seconds."""
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
    # Exact, with the node's use as a step function of time: running jobs (until their
    # end) and holds (over their window), summed at each candidate start and hold start.
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


def fits_window(st: ClusterState, n: int, g: int, t: float, length: float, now: float) -> bool:
    """Whether node `n` can run `g` GPUs from `t` for `length` without delaying a hold."""
    size = st.size[n]
    if t <= now and len(st.free[n]) < g:
        return False
    if st.usage_at(n, t) + g > size:
        return False
    return all(
        st.usage_at(n, h[0]) + g <= size for h in st.future.get(n, ()) if t < h[0] < t + length
    )


Entry = tuple[float, int, int]


class Planner:
    """Earliest starts, kept between passes; see the module docstring.

    Heap entries hold a lower bound: the instant the node's running jobs free `g` GPUs,
    ignoring future holds. For a node without holds that is exact. Nodes with holds are
    rare (the top jobs' planned starts, advance reservations) and get their exact instant
    for the asked run length when a query reaches them.
    """

    def __init__(self, st: ClusterState) -> None:
        self.st = st
        self.now = 0.0
        self.heaps: dict[tuple[int, int], list[Entry]] = {}
        # node_earliest of held nodes within one pass, by (node, version, GPUs, length):
        # every scan of a pool meets the same held nodes (a planned gang holds hundreds).
        self._exact: dict[tuple[int, int, int, float], float] = {}

    def begin(self, now: float) -> None:
        self.now = now
        self._exact = {}

    def reset(self) -> None:
        self.heaps.clear()

    def _lb(self, n: int, g: int) -> float:
        st = self.st
        need = g - len(st.free[n])
        if need <= 0:
            return -INF
        acc = 0
        for e, used in sorted(st.run[n].values()):
            acc += used
            if acc >= need:
                return e
        return INF

    def _heap(self, pool: Pool, g: int) -> list[Entry]:
        key = (pool.index, g)
        heap = self.heaps.get(key)
        if heap is None or len(heap) > 3 * len(pool.nodes) + 64:
            version = self.st.version
            lb = self._lb
            heap = [(lb(n, g), n, version[n]) for n in pool.nodes]
            heapq.heapify(heap)
            self.heaps[key] = heap
        return heap

    def touched_earlier(self, n: int) -> None:
        """Node `n` may free up sooner than its entries say: add fresh entries for it."""
        p = self.st.pool_of[n]
        v = self.st.version[n]
        for (pp, g), heap in self.heaps.items():
            if pp == p:
                heapq.heappush(heap, (self._lb(n, g), n, v))

    def scan(self, pool: Pool, g: int, length: float) -> Generator[tuple[float, int], None, None]:
        """Nodes of `pool` by the instant they can run `g` GPUs for `length`, earliest first.
        Close the iterator when done: it puts the entries it took back."""
        st = self.st
        heap = self._heap(pool, g)
        popped: list[Entry] = []
        side: list[tuple[float, int]] = []
        seen: set[int] = set()
        version, future, pool_of = st.version, st.future, st.pool_of
        now, p = self.now, pool.index
        exact = self._exact
        try:
            while True:
                while heap:
                    _, n, v = heap[0]
                    if v != version[n] or pool_of[n] != p:
                        heapq.heappop(heap)
                        if pool_of[n] == p:
                            heapq.heappush(heap, (self._lb(n, g), n, version[n]))
                        continue
                    if n in seen:
                        heapq.heappop(heap)
                        continue
                    if n in future:
                        popped.append(heapq.heappop(heap))
                        seen.add(n)
                        ekey = (n, v, g, length)
                        t = exact.get(ekey)
                        if t is None:
                            t = exact[ekey] = node_earliest(st, n, g, now, length)
                        heapq.heappush(side, (t, n))
                        continue
                    break
                if side and (not heap or side[0][0] <= max(heap[0][0], now)):
                    yield heapq.heappop(side)
                elif heap:
                    entry = heapq.heappop(heap)
                    popped.append(entry)
                    seen.add(entry[1])
                    yield (entry[0] if entry[0] > now else now), entry[1]
                else:
                    return
        finally:
            for entry in popped:
                heapq.heappush(heap, entry)

    def earliest_single(self, pool: Pool, g: int, length: float) -> tuple[float, int]:
        it = self.scan(pool, g, length)
        try:
            for t, n in it:
                return (t, n) if t < INF else (INF, -1)
        finally:
            it.close()
        return INF, -1

    def earliest_gang(
        self, pool: Pool, k: int, length: float, max_blocks: int | None
    ) -> tuple[float, list[int]]:
        """Earliest instant k whole nodes of one site are free for `length`, and which."""
        st = self.st
        by_site: dict[int, list[int]] = {}
        it = self.scan(pool, pool.size, length)
        try:
            for t, n in it:
                if t == INF:
                    break
                members = by_site.setdefault(st.site[n], [])
                members.append(n)
                if len(members) >= k and any(m in st.future for m in members):
                    # A held node free early may be taken again by its hold later: keep
                    # only nodes free for the whole run from the gang's start (conservative).
                    members[:] = [
                        m for m in members if fits_window(st, m, pool.size, t, length, self.now)
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
