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
    candidates = {now}
    for e, _ in st.run[n].values():
        if e > now:
            candidates.add(e)
    for h in fut:
        if h[1] > now:
            candidates.add(h[1])
    for c in sorted(candidates):
        if c == now and len(st.free[n]) < g:
            continue
        if st.usage_at(n, c) + g > size:
            continue
        if all(st.usage_at(n, h[0]) + g <= size for h in fut if c < h[0] < c + length):
            return c
    return INF


Entry = tuple[float, int, int]


class Planner:
    """Earliest starts for one pass; see the module docstring."""

    def __init__(self, st: ClusterState, now: float) -> None:
        self.st = st
        self.now = now
        self.heaps: dict[tuple[int, int, float], list[Entry]] = {}

    def _heap(self, pool: Pool, g: int, length: float) -> list[Entry]:
        key = (pool.index, g, length)
        heap = self.heaps.get(key)
        if heap is None:
            st, now, version = self.st, self.now, self.st.version
            heap = [(node_earliest(st, n, g, now, length), n, version[n]) for n in pool.nodes]
            heapq.heapify(heap)
            self.heaps[key] = heap
        return heap

    def _pop(self, heap: list[Entry], g: int, length: float) -> Entry | None:
        st, version = self.st, self.st.version
        while heap:
            entry = heapq.heappop(heap)
            n = entry[1]
            if entry[2] == version[n]:
                return entry
            heapq.heappush(heap, (node_earliest(st, n, g, self.now, length), n, version[n]))
        return None

    def touched_earlier(self, n: int) -> None:
        """Node `n` frees up sooner than before (a preemption): add fresh entries for it."""
        pool = self.st.pool_of[n]
        for (p, g, length), heap in self.heaps.items():
            if p == pool:
                t = node_earliest(self.st, n, g, self.now, length)
                heapq.heappush(heap, (t, n, self.st.version[n]))

    def earliest_single(self, pool: Pool, g: int, length: float) -> tuple[float, int]:
        heap = self._heap(pool, g, length)
        entry = self._pop(heap, g, length)
        if entry is None:
            return INF, -1
        heapq.heappush(heap, entry)
        return entry[0], entry[1]

    def earliest_gang(
        self, pool: Pool, k: int, length: float, max_blocks: int | None
    ) -> tuple[float, list[int]]:
        """Earliest instant k whole nodes of one site are free for `length`, and which."""
        g = pool.size
        heap = self._heap(pool, g, length)
        popped: list[Entry] = []
        by_site: dict[int, list[int]] = {}
        found: tuple[float, list[int]] = (INF, [])
        st = self.st
        while True:
            entry = self._pop(heap, g, length)
            if entry is None:
                break
            popped.append(entry)
            t, n, _ = entry
            if t == INF:
                break
            members = by_site.setdefault(st.site[n], [])
            members.append(n)
            if len(members) >= k:
                groups: dict[int, list[int]] = {}
                for m in members:
                    groups.setdefault(st.block[m], []).append(m)
                chosen, blocks = pick_groups(groups, k)
                if max_blocks is None or blocks <= max_blocks:
                    found = (t, chosen)
                    break
        for entry in popped:
            heapq.heappush(heap, entry)
        return found
