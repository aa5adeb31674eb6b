"""Placement now: best-fit single-node packing and gang placement on the fewest blocks.

A multi-node job is a gang: it gets all its nodes or none, and it takes whole nodes (every
GPU of each), so that no other job shares its nodes' network links. Single-node jobs pack
onto the fullest node that fits, which keeps whole nodes (and whole blocks) free for gangs.
Nodes with future holds are only used when the job ends before the hold needs them.
"""

from __future__ import annotations

import bisect

from gpucenter.core.pools import Pool
from gpucenter.core.state import ClusterState, Hold
from gpucenter.domain.jobs import WaitReason


def conflicting_hold(st: ClusterState, n: int, g: int, now: float, end: float) -> Hold | None:
    """The first hold on `n` that a job using `g` GPUs from now until `end` would delay.

    Use only drops when a job ends and only rises when a hold begins, so checking the use at
    each hold's start inside [now, end) is exact.
    """
    fut = st.future.get(n)
    if not fut:
        return None
    size = st.size[n]
    runs = st.run[n]
    for h in fut:
        t0 = h[0]
        if t0 >= end or h[1] <= now:
            continue
        t = t0 if t0 > now else now
        used = g  # `st.usage_at(n, t) + g`, inlined: called per held node per placement
        for e, k in runs.values():
            if e > t:
                used += k
        for hh in fut:
            if hh[0] <= t < hh[1]:
                used += hh[2]
        if used > size:
            return h
    return None


def pick_groups(groups: dict[int, list[int]], k: int) -> tuple[list[int], int]:
    """Take k members from as few groups as possible, best fit for the last group.

    While no single group covers what is left, take the largest group whole (largest first
    is optimal for the fewest groups); then take the rest from the smallest group that
    covers it, keeping large groups intact. Deterministic: ties by group key, members sorted.
    O(G log G) for G groups.
    """
    asc = sorted((len(m), key) for key, m in groups.items() if m)
    chosen: list[int] = []
    used = 0
    need = k
    while need > 0 and asc:
        i = bisect.bisect_left(asc, (need, -(2**62)))
        if i < len(asc):
            chosen.extend(sorted(groups[asc[i][1]])[:need])
            return chosen, used + 1
        top = asc[-1][0]
        _, key = asc.pop(bisect.bisect_left(asc, (top, -(2**62))))
        members = sorted(groups[key])
        chosen.extend(members)
        need -= len(members)
        used += 1
    return chosen, used


def _in_block(st: ClusterState, members: list[int], k: int) -> list[int]:
    """k nodes of one block, from as few NVLink domains as possible."""
    domains: dict[int, list[int]] = {}
    for n in members:
        domains.setdefault(st.domain[n], []).append(n)
    if len(domains) == 1:
        return sorted(members)[:k]
    return pick_groups(domains, k)[0]


def place_single(
    st: ClusterState, pool: Pool, g: int, now: float, end: float
) -> tuple[int, Hold | None]:
    """A node for a g-GPU job, or (-1, the hold that blocked a held node, if any)."""
    n = pool.pick_single(g)
    if n >= 0:
        return n, None
    best, best_free = -1, pool.size + 1
    blocker: Hold | None = None
    free = st.free
    for m in pool.held:
        f = len(free[m])
        if g <= f < best_free:
            h = conflicting_hold(st, m, g, now, end)
            if h is None:
                best, best_free = m, f
            elif blocker is None:
                blocker = h
    return best, (None if best >= 0 else blocker)


def place_gang(
    st: ClusterState, pool: Pool, k: int, now: float, end: float, max_blocks: int | None
) -> tuple[list[int], WaitReason | None, Hold | None]:
    """k whole nodes in one site on the fewest blocks, or ([], reason, blocking hold)."""
    bucket = pool.bucket
    for c in range(k, len(bucket)):
        if bucket[c]:
            b = min(bucket[c])
            return _in_block(st, list(pool.whole[b]), k), None, None
    if pool.whole_total + len(pool.held) < k:
        # Too few whole nodes even counting held ones: only the blocking hold is asked for
        # (the first held, wholly free node whose hold the job would delay).
        size = pool.size
        for m in pool.held:
            if len(st.free[m]) == size:
                h = conflicting_hold(st, m, size, now, end)
                if h is not None:
                    return [], WaitReason.RESOURCES, h
        return [], WaitReason.RESOURCES, None
    by_site: dict[int, dict[int, list[int]]] = {}
    for b, members in pool.whole.items():
        if members:
            by_site.setdefault(st.site_of_block[b], {})[b] = list(members)
    blocker: Hold | None = None
    if not any(pool.site_whole.get(s, 0) >= k for s in by_site):
        size = pool.size
        for m in pool.held:
            if len(st.free[m]) == size:
                h = conflicting_hold(st, m, size, now, end)
                if h is None:
                    by_site.setdefault(st.site[m], {}).setdefault(st.block[m], []).append(m)
                elif blocker is None:
                    blocker = h
    topology = False
    for site in sorted(by_site, key=lambda s: (sum(len(v) for v in by_site[s].values()), s)):
        groups = by_site[site]
        if sum(len(v) for v in groups.values()) < k:
            continue
        chosen, blocks = pick_groups(groups, k)
        if max_blocks is not None and blocks > max_blocks:
            topology = True
            continue
        return chosen, None, None
    if topology:
        return [], WaitReason.TOPOLOGY, None
    return [], WaitReason.RESOURCES, blocker
