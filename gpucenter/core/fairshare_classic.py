"""Slurm's classic fair-share formula, as a second `FairShareStrategy` beside Fair Tree.

Each project's factor is 2^(-U/S): S its normalised shares (its fraction of its siblings'
shares, multiplied down the path from the root) and U its effective usage (its fraction of
all usage). A project that used exactly its share gets 0.5; one that used nothing gets 1.
Unlike Fair Tree, projects in different subtrees are compared directly, so a heavy user in a
generous programme can rank above a light one in a small programme: the reason Slurm moved
to Fair Tree, kept here for centres that want the older behaviour and for comparisons.
Users under a project get the same formula within the project's shares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpucenter.core.fairshare import FairShare, FairShareFactors, ShareAccount
from gpucenter.domain.ids import ProjectId, UserId


@dataclass(frozen=True, slots=True)
class ClassicFairShare:
    """2^(-U/S) per project and user; deterministic (no ordering involved)."""

    name: str = "classic"

    def factors(self, fair_share: FairShare) -> FairShareFactors:
        total_usage = sum(fair_share.usage.values())
        by_project: dict[ProjectId, float] = {}
        by_user: dict[tuple[ProjectId, UserId], float] = {}
        programme_of: dict[ProjectId, str] = {}

        def visit(acc: ShareAccount, norm: float, programme: str) -> None:
            if acc.project_id is not None:
                project = acc.project_id
                programme_of.setdefault(project, programme)
                used = fair_share.usage.get(project, 0.0)
                by_project[project] = _factor(used, total_usage, norm)
                _users(acc, project, norm, used)
                return
            total = sum(max(c.shares, 0.0) for c in acc.children)
            for child in acc.children:
                share = max(child.shares, 0.0) / total if total > 0 else 0.0
                visit(child, norm * share, child.name if acc is fair_share.root else programme)

        def _users(acc: ShareAccount, project: ProjectId, norm: float, used: float) -> None:
            total = sum(max(c.shares, 0.0) for c in acc.children)
            for user in acc.children:
                if user.user_id is None or total <= 0:
                    continue
                own = fair_share.user_usage.get((project, user.user_id), 0.0)
                by_user[(project, user.user_id)] = _factor(
                    own, total_usage, norm * max(user.shares, 0.0) / total
                )

        visit(fair_share.root, 1.0, fair_share.root.name)
        return FairShareFactors(by_project, by_user, programme_of)


def _factor(used: float, total_usage: float, norm_shares: float) -> float:
    if norm_shares <= 0.0:
        return 0.0
    effective = used / total_usage if total_usage > 0 else 0.0
    return math.pow(2.0, -effective / norm_shares)


CLASSIC = ClassicFairShare()
