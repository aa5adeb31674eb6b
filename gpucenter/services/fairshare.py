"""Build the core's fair-share input from the database: the share tree and decayed usage.

Tree: centre -> programme -> organisation -> project -> user, built by the same function as
the simulator's (`gpucenter.core.share_tree`). A project's shares are the GPU-hours of its
current allocations; a programme's the sum over its projects unless the centre sets them
(`GPUCENTER_PROGRAMME_SHARES`). Usage is the ledger's GPU-seconds decayed by a
half-life (plus what running jobs have used so far), per project and per (project, user),
read from the decayed_usage table that every charge updates (never a scan of the ledger).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.core import FairShare, decay
from gpucenter.core.fairshare import DEFAULT_HALF_LIFE_S
from gpucenter.core.share_tree import ShareHolder, build_share_tree
from gpucenter.domain.clock import as_utc
from gpucenter.domain.ids import ProjectId, UserId
from gpucenter.domain.jobs import JobState
from gpucenter.persistence.tables import (
    JobRow,
    MembershipRow,
    OrganisationRow,
    ProjectRow,
    UserRow,
)
from gpucenter.persistence.tables_usage import DecayedUsageRow
from gpucenter.services.allocations import project_standings

HALF_LIFE_S = DEFAULT_HALF_LIFE_S


def add_decayed_usage(
    s: Session, project_id: int, user_id: int, gpu_seconds: float, at: datetime
) -> None:
    """Fold a charge into the decayed usage of (project, user), in the charge's transaction."""
    row = s.get(DecayedUsageRow, (project_id, user_id), with_for_update=True)
    if row is None:
        s.add(
            DecayedUsageRow(
                project_id=project_id,
                user_id=user_id,
                gpu_seconds=gpu_seconds,
                as_of=at,
                charges=1,
            )
        )
        return
    since = as_utc(row.as_of)
    if at >= since:
        row.gpu_seconds = decay(row.gpu_seconds, (at - since).total_seconds(), HALF_LIFE_S)
        row.as_of = at
        row.gpu_seconds += gpu_seconds
    else:  # a charge dated before the row's time: decay the charge instead
        row.gpu_seconds += decay(gpu_seconds, (since - at).total_seconds(), HALF_LIFE_S)
    row.charges += 1


DIRECT = "(direct)"
"""The programme level's name for allocations the centre made directly (no programme's name
can contain parentheses)."""


def load_fair_share(
    s: Session, now: datetime, programme_shares: Mapping[str, float] | None = None
) -> FairShare:
    """The share tree of `gpucenter.core.share_tree` over every project, and decayed usage.

    A project sits under the programme of its current allocations (see
    `services.allocations`) with their GPU-hours as shares; a project with none sits under
    `DIRECT` with no shares. Suspended and expired allocations give no weight."""
    standings = project_standings(s, now)
    members: dict[int, list[tuple[UserId, str]]] = defaultdict(list)
    for project_id, user_id, username in s.execute(
        select(MembershipRow.project_id, MembershipRow.user_id, UserRow.username).join(
            UserRow, UserRow.id == MembershipRow.user_id
        )
    ):
        members[project_id].append((UserId(user_id), username))
    org_names = {o.id: o.name for o in s.scalars(select(OrganisationRow))}
    holders = []
    for project in s.scalars(select(ProjectRow).order_by(ProjectRow.name)):
        standing = standings.get(project.id)
        holders.append(
            ShareHolder(
                programme=(standing.programme if standing else None) or DIRECT,
                organisation=org_names[project.organisation_id],
                project=project.name,
                project_id=ProjectId(project.id),
                shares=standing.hours if standing else 0.0,
                members=tuple(sorted(members[project.id], key=lambda m: m[1])),
            )
        )
    holders.sort(key=lambda h: h.organisation)  # stable: projects stay by name within each
    root = build_share_tree(holders, root="centre", programme_shares=programme_shares)
    usage, user_usage = _usage(s, now)
    return FairShare(root, usage, user_usage)


def _usage(
    s: Session, now: datetime
) -> tuple[dict[ProjectId, float], dict[tuple[ProjectId, UserId], float]]:
    """Decayed GPU-seconds per project and per (project, user), running jobs included."""
    usage: dict[ProjectId, float] = defaultdict(float)
    user_usage: dict[tuple[ProjectId, UserId], float] = defaultdict(float)
    for row in s.scalars(select(DecayedUsageRow)):
        value = decay(row.gpu_seconds, (now - as_utc(row.as_of)).total_seconds(), HALF_LIFE_S)
        usage[ProjectId(row.project_id)] += value
        user_usage[(ProjectId(row.project_id), UserId(row.user_id))] += value
    for job in s.scalars(select(JobRow).where(JobRow.state == JobState.RUNNING.value)):
        if job.started_at is None:
            continue
        used = max(0.0, (now - as_utc(job.started_at)).total_seconds())
        value = used * job.gpus_per_node * job.nodes
        usage[ProjectId(job.project_id)] += value
        user_usage[(ProjectId(job.project_id), UserId(job.user_id))] += value
    return dict(usage), dict(user_usage)


__all__ = [
    "DIRECT",
    "HALF_LIFE_S",
    "add_decayed_usage",
    "load_fair_share",
]
