"""Time: which future holds a start would delay, and when a node can next take a job.

A node's use over time is its running jobs (each until its time limit or requeue) plus its
future holds. Use only drops when a job ends and only rises when a hold begins, so checking
a candidate start against each hold's start instant inside the job's run is exact.

`Planner` answers "earliest start" for the top blocked jobs. It keeps, per (pool, GPUs, run
length), a heap of (earliest time, node, node version); entries go stale when the node
changes and are recomputed lazily when they reach the top, so the k earliest nodes cost
O(k log n) after a one-off O(n) build, instead of a scan of every node per reservation.
It also keeps each planned job's answer across passes and re-checks it against only the nodes
that changed since (`plancache`): a blocked gang is otherwise re-planned every pass with the
same result, which is what made a trace replay (one pass per event) slow.

`node_earliest` past `now` does not depend on `now`: if it answers c > now' >= now, it answers
c at now' too (between the largest candidate <= now' and now' use can only rise, and every
hold start the old candidates failed on is still in now''s window or already counted), which
is what lets a kept plan survive the clock moving forward.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Generator

from gpucenter.core.placement import conflicting_hold, pick_groups
from gpucenter.core.plancache import (
    MAX_DIRTY,
    KeptPlan,
    PlanKey,
    gang_cacheable,
    hold_changes,
    revalidate,
)
from gpucenter.core.pools import Pool
from gpucenter.core.state import ClusterState, Hold

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
    if g == size:
        got = _whole_earliest(runs, holds, len(st.free[n]) >= g, now, length)
        if got is not None:
            return got

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


def _whole_earliest(
    runs: list[tuple[float, int]],
    holds: list[tuple[float, float, int]],
    free_now: bool,
    now: float,
    length: float,
) -> float | None:
    """`node_earliest` for the whole node (the common query: gangs), or None when a run or
    hold of no GPUs or an empty hold window makes the general code the safer answer.

    The same candidates in the same order, with the same tests spelt for `room == 0`: use at
    `c` is zero iff every run ended by `c` (all end no later than the latest, `last`) and no
    hold covers `c`; a hold starting inside the run has use > 0 at its start (it covers it).
    """
    last = -INF
    for e, k in runs:
        if k <= 0:
            return None
        if e > last:
            last = e
    for h0, h1, k in holds:
        if k <= 0 or not h0 < h1:
            return None
    candidates = {now}
    for e, _ in runs:
        if e > now:
            candidates.add(e)
    for _, h1, _ in holds:
        if h1 > now:
            candidates.add(h1)
    for c in sorted(candidates):
        if c == now and not free_now:
            continue
        if last > c:
            continue
        stop = c + length
        for h0, h1, _ in holds:
            if h0 <= c < h1 or c < h0 < stop:
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

    def __init__(self, st: ClusterState, *, keep: bool = True) -> None:
        self.st = st
        self.now = 0.0
        self.heaps: dict[tuple[int, int], list[Entry]] = {}
        # node_earliest of held nodes by (node, real version, holds, GPUs, length) -> (answer,
        # `now` it was computed at): every scan of a pool meets the same held nodes (a planned
        # gang holds hundreds), pass after pass. An answer after `now` stays exact as the
        # clock moves (see the module docstring); one at or before `now` is recomputed.
        self._exact: dict[tuple[int, int, tuple[Hold, ...], int, float], tuple[float, float]] = {}
        self._in_pass: dict[tuple[int, int, int, float], float] = {}
        # Plans kept across passes (see `plancache`), by (job, pool, GPUs or nodes, length,
        # max blocks or -1, gang); `keep=False` recomputes every plan (for equivalence tests).
        self.keep = keep
        self.kept: dict[PlanKey, KeptPlan] = {}
        self.passes = 0
        self.reused = 0  # plans answered from `kept` (for tests and profiling)
        self.groups: dict[int, list[tuple[Hold, tuple[int, ...]]]] = {}
        self._advance: dict[int, Hold] = {}

    def begin(self, now: float, advance: dict[int, Hold]) -> None:
        """A new pass with these advance-reservation holds: plans not asked for in the last
        pass are dropped (all of them if the advance holds changed), the others fold the
        state's change log into their own dirty sets, and the log starts afresh."""
        self.now = now
        self._in_pass = {}
        if len(self._exact) > 100_000:
            self._exact = {}
        self.passes += 1
        self.groups = {}
        st = self.st
        log = st.log
        if advance != self._advance:
            self._advance = dict(advance)
            self.kept.clear()
        if self.kept:
            stale = self.passes - 2
            for key, plan in list(self.kept.items()):
                if plan.used < stale:
                    del self.kept[key]
                    continue
                plan.dirty.update(log[plan.pos :])
                plan.pos = 0
                if len(plan.dirty) > MAX_DIRTY:
                    del self.kept[key]
        log.clear()

    def reset(self) -> None:
        self.heaps.clear()
        self.kept.clear()

    def note_holds(self, pool: Pool, hold: Hold, nodes: tuple[int, ...]) -> None:
        """A planned start put `hold` on `nodes` of `pool` (see `Snap`)."""
        self.groups.setdefault(pool.index, []).append((hold, nodes))

    def exact(self, n: int, g: int, length: float) -> float:
        """`node_earliest` of a held node at `now`, kept across passes (see `_exact`; within
        a pass, looked up first by the node's version, a cheaper key)."""
        st = self.st
        pkey = (n, st.version[n], g, length)
        t = self._in_pass.get(pkey)
        if t is not None:
            return t
        now = self.now
        ekey = (n, st.real[n], tuple(st.future[n]), g, length)
        got = self._exact.get(ekey)
        if got is not None and got[1] <= now and (got[0] > now or got[1] == now):
            t = got[0]
        else:
            t = node_earliest(st, n, g, now, length)
            self._exact[ekey] = (t, now)
        self._in_pass[pkey] = t
        return t

    def _t(self, n: int, g: int, length: float, t0: float) -> float:
        """t(n) as `scan` yields it (the node's earliest start at `now`), or, for a held node
        whose lower bound is already past `t0`, that bound: all a kept plan asks is how
        t(n) compares with its instant `t0`."""
        st = self.st
        lb = self._lb(n, g)
        if lb < self.now:
            lb = self.now
        if n in st.future and lb <= t0:
            return self.exact(n, g, length)
        return lb

    def _kept(self, key: PlanKey, pool: Pool, g: int) -> tuple[float, list[int]] | None:
        """A kept plan that still holds now (updated to the current state), else None."""
        plan = self.kept.get(key)
        if plan is None:
            return None
        plan.used = self.passes
        st = self.st
        now = self.now
        if not plan.now <= now < plan.t:
            return None
        snap = tuple(self.groups.get(pool.index, ()))
        dirty = plan.dirty.union(st.log[plan.pos :])
        if snap != plan.snap:
            dirty |= hold_changes(plan.snap, snap)
        if len(dirty) > MAX_DIRTY:
            return None
        p = pool.index
        pool_of = st.pool_of
        future = st.future
        mine = [n for n in dirty if pool_of[n] == p]
        # Unheld nodes first: cheap to place, and a plan that fails usually fails on them.
        mine.sort(key=future.__contains__)
        length = key[3]
        t0 = plan.t

        def t_of(n: int) -> float:
            return self._t(n, g, length, t0)

        nodes = revalidate(st, plan, now, snap, mine, t_of)
        if nodes is None:
            return None
        self.reused += 1
        return plan.t, list(nodes)

    def _keep(
        self,
        key: PlanKey,
        pool: Pool,
        t: float,
        nodes: list[int],
        last: int,
        prefix: set[int],
        k: int,
        max_blocks: int | None,
    ) -> None:
        if t == INF or not nodes or t <= self.now:
            self.kept.pop(key, None)
            return
        gang = key[5]
        if gang and not gang_cacheable(self.st, prefix, k):
            self.kept.pop(key, None)
            return
        self.kept[key] = KeptPlan(
            t,
            list(nodes),
            last,
            prefix,
            self.now,
            tuple(self.groups.get(pool.index, ())),
            len(self.st.log),
            gang,
            k,
            max_blocks,
            self.passes,
        )

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
        exact = self.exact
        in_pass = self._in_pass
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
                        t = in_pass.get((n, v, g, length))  # `exact`'s first step, inline
                        if t is None:
                            t = exact(n, g, length)
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

    def earliest_single(
        self, pool: Pool, g: int, length: float, job: int | None = None
    ) -> tuple[float, int]:
        """Earliest instant a node of `pool` has `g` GPUs free for `length`, and which.
        With `job`, the answer is kept for that job's next passes (see `plancache`)."""
        key: PlanKey | None = None
        if job is not None and self.keep:
            key = (job, pool.index, g, length, -1, False)
            got = self._kept(key, pool, g)
            if got is not None:
                return got[0], got[1][0]
        found = self._single(pool, g, length)
        if key is not None:
            t, n = found
            self._keep(key, pool, t, [n], n, {n}, 1, None)
        return found

    def _single(self, pool: Pool, g: int, length: float) -> tuple[float, int]:
        it = self.scan(pool, g, length)
        try:
            for t, n in it:
                return (t, n) if t < INF else (INF, -1)
        finally:
            it.close()
        return INF, -1

    def earliest_gang(
        self, pool: Pool, k: int, length: float, max_blocks: int | None, job: int | None = None
    ) -> tuple[float, list[int]]:
        """Earliest instant k whole nodes of one site are free for `length`, and which.
        With `job`, the answer is kept for that job's next passes (see `plancache`)."""
        key: PlanKey | None = None
        if job is not None and self.keep:
            key = (job, pool.index, k, length, -1 if max_blocks is None else max_blocks, True)
            got = self._kept(key, pool, pool.size)
            if got is not None:
                return got
        yielded: list[int] = []
        t, nodes = self._gang(pool, k, length, max_blocks, yielded)
        if key is not None:
            self._keep(
                key, pool, t, nodes, yielded[-1] if yielded else -1, set(yielded), k, max_blocks
            )
        return t, nodes

    def _gang(
        self, pool: Pool, k: int, length: float, max_blocks: int | None, yielded: list[int]
    ) -> tuple[float, list[int]]:
        """The first instant the scan gathers k nodes of one site (within `max_blocks`).

        Per site it keeps the members (nodes yielded so far and not filtered out) by block,
        and which of them are held. The window filter runs, as ever, whenever a site with k
        or more members has a held one, and drops for good the members that cannot run from
        `t`; but it tests only held members and members new since its last run
        (`_SiteGather.filter`), and the blocks are kept, not regrouped each step. The answer
        is the same; the work follows the held nodes, not every node yielded -- a gang
        limited by `max_blocks` scans far, and re-testing every member at every step took
        seconds per pass at 65,000 GPUs.
        """
        st = self.st
        future = st.future
        site_of, block_of = st.site, st.block
        size = pool.size
        now = self.now
        sites: dict[int, _SiteGather] = {}
        it = self.scan(pool, size, length)
        try:
            for t, n in it:
                if t == INF:
                    break
                yielded.append(n)
                gather = sites.get(site_of[n])
                if gather is None:
                    gather = sites[site_of[n]] = _SiteGather()
                gather.add(n, block_of[n], n in future)
                if gather.count >= k and gather.held:
                    # A held node free early may be taken again by its hold later: keep
                    # only nodes free for the whole run from the gang's start (conservative).
                    gather.filter(st, size, t, length, now)
                if gather.short:
                    gather.short -= 1  # not enough nodes yet for `max_blocks` blocks
                elif gather.count >= k:
                    chosen, blocks = pick_groups(gather.groups, k)
                    if max_blocks is None or blocks <= max_blocks:
                        return t, chosen
                    # The fewest blocks that hold k nodes exceed `max_blocks` until the
                    # `max_blocks` largest blocks hold k; each node adds at most one to them.
                    largest = sorted(map(len, gather.groups.values()), reverse=True)
                    gather.short = k - sum(largest[:max_blocks]) - 1
        finally:
            it.close()
        return INF, []


class _SiteGather:
    """The members of one site gathered by `Planner._gang`, by network block."""

    __slots__ = ("checked_at", "count", "fresh", "groups", "held", "members", "short")

    def __init__(self) -> None:
        self.members: dict[int, int] = {}  # node -> block, in the order yielded
        self.groups: dict[int, list[int]] = {}
        self.count = 0
        # Held members -> the last instant their last pass of the filter holds to.
        self.held: dict[int, float] = {}
        self.fresh: list[int] = []  # unheld members not yet through the filter
        self.checked_at = -INF
        self.short = 0  # nodes still to add before `max_blocks` can be met

    def add(self, n: int, block: int, held: bool) -> None:
        self.members[n] = block
        members = self.groups.get(block)
        if members is None:
            self.groups[block] = [n]
        else:
            members.append(n)
        self.count += 1
        if held:
            self.held[n] = -INF  # tested at the next filter, like a fresh member
        else:
            self.fresh.append(n)

    def filter(self, st: ClusterState, g: int, t: float, length: float, now: float) -> None:
        """Drop the members that cannot run `g` GPUs from `t` for `length` (`fits_window`).

        A member that passed at an earlier instant t1 passes at every t up to the first
        hold start after t1 less `length`: until then no hold begins inside its window, its
        runs only end, and the free-now test does not change within a pass. So unheld
        members are tested once, held ones again only past that bound, and fresh ones
        always -- unless the instant went back (the scan's order rules it out), when every
        member is."""
        future = st.future
        held = self.held
        if t < self.checked_at:
            candidates = list(self.members)
        else:
            candidates = [n for n, until in held.items() if until < t]
            candidates += self.fresh
        self.fresh = []
        self.checked_at = t
        for n in candidates:
            if fits_window(st, n, g, t, length, now):
                if n in held:
                    held[n] = min((h[0] - length for h in future[n] if h[0] > t), default=INF)
                continue
            block = self.members.pop(n)
            self.groups[block].remove(n)
            self.count -= 1
            held.pop(n, None)
