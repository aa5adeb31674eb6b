"""The share tree, built one way for the server and the simulator.

centre -> programme -> organisation -> project (-> user). A programme's shares are its
entitlement among programmes: given explicitly (the simulator's policy shares per applicant
type, or a centre's configured programme shares) or, by default, the sum of its projects'
shares. An organisation's shares are the sum of its projects'; a project's are what its
current allocations grant (GPU-hours); each member of a project has an equal share of it.

Siblings keep the order in which their first holder was given (callers give holders in a
stable order: the server by organisation and project name, the simulator by applicant type
and project), so that equal inputs give the same tree and the same decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gpucenter.core.fairshare import ShareAccount
from gpucenter.domain.ids import ProjectId, UserId


@dataclass(frozen=True, slots=True)
class ShareHolder:
    """One project's place in the tree and its shares."""

    programme: str
    organisation: str
    project: str
    project_id: ProjectId
    shares: float
    members: tuple[tuple[UserId, str], ...] = ()
    """(user id, name) of the project's members, each with one share of the project."""


@dataclass(slots=True)
class _Programme:
    organisations: dict[str, list[ShareHolder]] = field(default_factory=dict)


def build_share_tree(
    holders: Iterable[ShareHolder],
    *,
    root: str = "centre",
    programme_shares: Mapping[str, float] | None = None,
) -> ShareAccount:
    """The tree over `holders`; `programme_shares` overrides a programme's default shares
    (the sum of its projects'); programmes missing from it keep the default."""
    programmes: dict[str, _Programme] = {}
    for holder in holders:
        programme = programmes.setdefault(holder.programme, _Programme())
        programme.organisations.setdefault(holder.organisation, []).append(holder)
    children = []
    for name, programme in programmes.items():
        organisations = tuple(
            ShareAccount(org, sum(h.shares for h in projects), tuple(map(_project, projects)))
            for org, projects in programme.organisations.items()
        )
        default = sum(o.shares for o in organisations)
        given = programme_shares.get(name) if programme_shares is not None else None
        children.append(ShareAccount(name, default if given is None else given, organisations))
    return ShareAccount(root, 1.0, tuple(children))


def _project(holder: ShareHolder) -> ShareAccount:
    users = tuple(ShareAccount(name, 1.0, user_id=uid) for uid, name in holder.members)
    return ShareAccount(holder.project, holder.shares, users, project_id=holder.project_id)
