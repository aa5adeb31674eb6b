"""Planned starts kept across passes, and the exact test of when one still holds.

Why: a blocked gang's earliest start (`Planner.earliest_gang`) walks its pool's nodes in
order of when they free up until k whole nodes gather in one site: hundreds of heap pops and
exact per-node checks, ~13 ms at 3,250 nodes, redone every pass for each of the top blocked
jobs although the answer rarely changes. A simulator runs a pass per event, so that re-planning
dominated a replay.

What a plan depends on. The scan yields nodes in a fixed order of (earliest instant t(n), tie
rules that depend only on that node); a plan's answer is the node `last` at which the scan
stopped, and the set `prefix` of nodes yielded up to it. For a single-node job the answer is
`last` alone. For a gang the stop condition ("k members in one site within `max_blocks`") is
monotone in the yielded set, so when no held node took part in it (no site with k or more
prefix nodes held a hold, so the window filter never ran), the answer is a function of
`prefix` and `last`: every shorter prefix failed, and at `last` the site's prefix members
were picked.

So a kept plan is recomputed only when its inputs moved: a node whose state changed since the
plan (GPUs taken or given back, a time limit changed: `ClusterState.log`; or its holds
differ) is re-placed by its new t(n) against the plan's instant; a node that enters the
prefix, a tie, a change of `last`, or a held node inside the prefix of a gang throws the plan
away. Nodes that leave a gang's prefix are dropped from it, and if they were in the chosen
site the site's members are picked again (the same `pick_groups` the scan would run). Nodes
that did not change keep their t(n): past `now` it does not depend on `now` (see
`node_earliest`), so moving the clock forward, short of the plan's instant, changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from gpucenter.core.placement import pick_groups
from gpucenter.core.state import ClusterState, Hold

#: A plan whose pool changed in more nodes than this is recomputed, not checked node by node.
MAX_DIRTY = 4096

#: The planned-start holds put on one pool's nodes so far in a pass, in order: one (hold,
#: nodes) group per planned job. With the advance-reservation holds (the same every pass
#: until the reservations change, when every kept plan is dropped) that is every hold a
#: plan in that pool can meet, so comparing groups replaces comparing nodes' holds.
Snap = tuple[tuple[Hold, tuple[int, ...]], ...]
PlanKey = tuple[int, int, int, float, int, bool]


def hold_changes(old: Snap, new: Snap) -> set[int]:
    """Nodes whose holds may differ between two group lists (a superset is safe)."""
    out: set[int] = set()
    for _, nodes in set(old).symmetric_difference(new):
        out.update(nodes)
    return out


class KeptPlan:
    """One job's plan in one pool, and what it was computed from."""

    __slots__ = (
        "dirty",
        "gang",
        "k",
        "last",
        "max_blocks",
        "nodes",
        "now",
        "pos",
        "prefix",
        "snap",
        "t",
        "used",
    )

    def __init__(
        self,
        t: float,
        nodes: list[int],
        last: int,
        prefix: set[int],
        now: float,
        snap: Snap,
        pos: int,
        gang: bool,
        k: int,
        max_blocks: int | None,
        used: int,
    ) -> None:
        self.t = t
        self.nodes = nodes
        self.last = last
        self.prefix = prefix
        self.now = now
        self.snap = snap
        self.pos = pos  # position in `ClusterState.log` the plan has seen up to
        self.dirty: set[int] = set()  # changed nodes from logs already folded away
        self.gang = gang
        self.k = k
        self.max_blocks = max_blocks
        self.used = used  # the planner's pass number when last asked for


def gang_cacheable(st: ClusterState, prefix: set[int], k: int) -> bool:
    """Whether no site with k or more prefix nodes holds a held node (the window filter of
    `earliest_gang` never ran, so the answer is a function of the prefix)."""
    future = st.future
    held_sites = {st.site[n] for n in prefix if n in future}
    if not held_sites:
        return True
    site = st.site
    counts: dict[int, int] = {}
    for n in prefix:
        s = site[n]
        if s in held_sites:
            counts[s] = counts.get(s, 0) + 1
    return all(c < k for c in counts.values())


def revalidate(
    st: ClusterState,
    plan: KeptPlan,
    now: float,
    snap: Snap,
    changed: list[int],
    t_of: Callable[[int], float],
) -> list[int] | None:
    """The plan's nodes if it is still what a fresh scan would answer at `now`, else None.

    `changed` are the pool's nodes that changed since the plan; `t_of(n)` places one of them
    against the plan's instant with the scan's own rules (a bound past the instant will do).
    Updates the plan to the current state when it holds."""
    t0 = plan.t
    last = plan.last
    prefix = plan.prefix
    future = st.future
    left: list[int] = []
    if last in changed:
        return None
    for n in changed:
        t = t_of(n)
        if t == t0:
            return None  # a tie: the order against `last` is not worth reasoning about
        if t < t0:
            if n not in prefix or (plan.gang and n in future):
                return None
        elif n in prefix:
            left.append(n)
    nodes = plan.nodes
    if left:
        if not plan.gang:
            return None  # cannot happen (a single's prefix is `last`), kept for safety
        prefix = prefix.difference(left)
        site = st.site
        s = site[last]
        if any(site[n] == s for n in left):
            groups: dict[int, list[int]] = {}
            block = st.block
            members = 0
            for n in prefix:
                if site[n] == s:
                    groups.setdefault(block[n], []).append(n)
                    members += 1
            if members < plan.k:
                return None
            nodes, blocks = pick_groups(groups, plan.k)
            if plan.max_blocks is not None and blocks > plan.max_blocks:
                return None
    plan.prefix = prefix
    plan.nodes = nodes
    plan.now = now
    plan.snap = snap
    plan.dirty = set()
    plan.pos = len(st.log)
    return nodes
