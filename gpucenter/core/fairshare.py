"""Fair share from allocations: a share tree ranked with Slurm's Fair Tree algorithm.

The tree is programme -> organisation -> project (-> user). At every level siblings are ranked
by level fair share S/U (their share of the parent's shares over their share of the parent's
decayed usage); a sibling that used less than its share has S/U > 1 and goes first, and the
whole subtree of a better sibling ranks above every leaf of a worse one. The factor of a leaf
is its rank turned into (0, 1]. Ranking rather than Slurm's classic 2^(-U/S) keeps siblings in
separate subtrees from being compared across levels, which is what "programme A's unused share
goes to A's organisations first" means.

Usage decays by a half-life so that old usage matters less: `decay` is the pure helper the
accounting side (or a replay) applies between passes.

The scheduler does not call Fair Tree by name: it asks the `FairShareStrategy` of its
`Policies` (Fair Tree by default; `ClassicFairShare` in `fairshare_classic` is Slurm's
earlier formula) to turn the tree and usage into factors. The tree itself is built by
`share_tree.build_share_tree`, the same for the server and the simulator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from gpucenter.domain.ids import ProjectId, UserId

DEFAULT_HALF_LIFE_S = 7 * 24 * 3600.0
"""How fast usage is forgotten: the one half-life the server's usage table and the simulator
decay with (Slurm's PriorityDecayHalfLife defaults to 7 days too)."""


@dataclass(frozen=True, slots=True)
class ShareAccount:
    """One node of the share tree. Projects set `project_id`; user leaves set `user_id`."""

    name: str
    shares: float = 1.0
    children: tuple[ShareAccount, ...] = ()
    project_id: ProjectId | None = None
    user_id: UserId | None = None


@dataclass(frozen=True, slots=True)
class FairShare:
    """The tree and decayed usage (GPU-seconds) per project and, optionally, per user."""

    root: ShareAccount
    usage: Mapping[ProjectId, float] = field(default_factory=dict)
    user_usage: Mapping[tuple[ProjectId, UserId], float] = field(default_factory=dict)


def decay(value: float, elapsed_s: float, half_life_s: float = DEFAULT_HALF_LIFE_S) -> float:
    """`value` after `elapsed_s` seconds of exponential decay with the given half-life."""
    if elapsed_s <= 0 or half_life_s <= 0:
        return value
    return value * math.pow(0.5, elapsed_s / half_life_s)


def decay_all(
    usage: Mapping[ProjectId, float], elapsed_s: float, half_life_s: float = DEFAULT_HALF_LIFE_S
) -> dict[ProjectId, float]:
    """Decay every entry; a replay calls this between passes and then adds new charges."""
    factor = decay(1.0, elapsed_s, half_life_s)
    return {k: v * factor for k, v in usage.items()}


@dataclass(frozen=True, slots=True)
class FairShareFactors:
    """Factor per project (and per (project, user)), and the programme each project is in."""

    by_project: Mapping[ProjectId, float]
    by_user: Mapping[tuple[ProjectId, UserId], float]
    programme_of: Mapping[ProjectId, str]

    def factor(self, project: ProjectId, user: UserId | None) -> float:
        if user is not None:
            f = self.by_user.get((project, user))
            if f is not None:
                return f
        return self.by_project.get(project, 0.0)


NO_FAIR_SHARE = FairShareFactors({}, {}, {})


def compute_factors(fair_share: FairShare | None) -> FairShareFactors:
    """Rank every leaf of the tree (Fair Tree); deterministic: ties break by account name."""
    if fair_share is None:
        return NO_FAIR_SHARE
    usage_memo: dict[int, float] = {}

    def usage_of(acc: ShareAccount, project: ProjectId | None) -> float:
        key = id(acc)
        got = usage_memo.get(key)
        if got is not None:
            return got
        proj = acc.project_id if acc.project_id is not None else project
        if acc.user_id is not None and proj is not None:
            value = fair_share.user_usage.get((proj, acc.user_id), 0.0)
        elif acc.project_id is not None:
            own = fair_share.usage.get(acc.project_id, 0.0)
            value = max(own, sum(usage_of(c, proj) for c in acc.children))
        else:
            value = sum(usage_of(c, proj) for c in acc.children)
        usage_memo[key] = value
        return value

    leaves: list[tuple[ShareAccount, ProjectId | None]] = []
    first_leaf_of_project: dict[ProjectId, int] = {}
    programme_of: dict[ProjectId, str] = {}

    def visit(acc: ShareAccount, project: ProjectId | None, programme: str) -> None:
        proj = acc.project_id if acc.project_id is not None else project
        if acc.project_id is not None:
            programme_of.setdefault(acc.project_id, programme)
            first_leaf_of_project.setdefault(acc.project_id, len(leaves))
        if not acc.children:
            leaves.append((acc, proj))
            return
        total_shares = sum(max(c.shares, 0.0) for c in acc.children)
        total_usage = sum(usage_of(c, proj) for c in acc.children)

        def level_fs(c: ShareAccount) -> float:
            s = max(c.shares, 0.0) / total_shares if total_shares > 0 else 0.0
            if s == 0.0:
                return 0.0
            u = usage_of(c, proj) / total_usage if total_usage > 0 else 0.0
            return math.inf if u == 0.0 else s / u

        ranked = sorted(acc.children, key=lambda c: (-level_fs(c), c.name))
        for child in ranked:
            visit(child, proj, child.name if acc is fair_share.root else programme)

    visit(fair_share.root, None, fair_share.root.name)
    n = len(leaves)
    by_user: dict[tuple[ProjectId, UserId], float] = {}
    by_project: dict[ProjectId, float] = {}
    for i, (acc, proj) in enumerate(leaves):
        if proj is not None and acc.user_id is not None:
            by_user[(proj, acc.user_id)] = (n - i) / n
    for proj, i in first_leaf_of_project.items():
        by_project[proj] = (n - i) / n
    return FairShareFactors(by_project, by_user, programme_of)


class FairShareStrategy(Protocol):
    """How a share tree and its decayed usage become per-project (and per-user) factors in
    (0, 1]. One implementation per policy, chosen in `Policies.fair_share`."""

    @property
    def name(self) -> str: ...

    def factors(self, fair_share: FairShare) -> FairShareFactors: ...


@dataclass(frozen=True, slots=True)
class FairTree:
    """Slurm's Fair Tree: leaves ranked level by level by S/U (see the module docstring)."""

    name: str = "fair-tree"

    def factors(self, fair_share: FairShare) -> FairShareFactors:
        return compute_factors(fair_share)


FAIR_TREE = FairTree()
