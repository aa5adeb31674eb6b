"""Build the core's fair-share input from the database: the share tree and decayed usage.

Tree: centre -> programme -> organisation -> project -> user. Until programmes exist in the
database every project sits under one programme, "general". A project's shares are the
GPU-hours of its active allocations; an organisation's the sum over its projects; each member
of a project has an equal share of it. Usage is the ledger's GPU-seconds decayed by a
half-life (plus what running jobs have used so far), per project and per (project, user),
read from the decayed_usage table that every charge updates (never a scan of the ledger).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.core import FairShare, ShareAccount, decay
from gpucenter.domain.clock import as_utc
from gpucenter.domain.ids import ProjectId, UserId
from gpucenter.domain.jobs import JobState
from gpucenter.persistence.tables import (
    AllocationRow,
    JobRow,
    MembershipRow,
    OrganisationRow,
    ProjectRow,
    UserRow,
)
from gpucenter.persistence.tables_usage import DecayedUsageRow

HALF_LIFE_S = 7 * 24 * 3600.0


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


def load_fair_share(s: Session, now: datetime) -> FairShare:
    shares: dict[int, float] = defaultdict(float)
    for alloc in s.scalars(
        select(AllocationRow).where(AllocationRow.starts_at <= now, AllocationRow.ends_at > now)
    ):
        shares[alloc.project_id] += alloc.gpu_seconds / 3600
    members: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for project_id, user_id, username in s.execute(
        select(MembershipRow.project_id, MembershipRow.user_id, UserRow.username).join(
            UserRow, UserRow.id == MembershipRow.user_id
        )
    ):
        members[project_id].append((user_id, username))

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

    organisations = []
    org_rows = s.scalars(select(OrganisationRow).order_by(OrganisationRow.name)).all()
    projects = s.scalars(select(ProjectRow).order_by(ProjectRow.name)).all()
    for org in org_rows:
        children = []
        for project in projects:
            if project.organisation_id != org.id:
                continue
            users = tuple(
                ShareAccount(username, 1.0, user_id=UserId(user_id))
                for user_id, username in sorted(members[project.id], key=lambda m: m[1])
            )
            children.append(
                ShareAccount(
                    project.name,
                    shares[project.id],
                    users,
                    project_id=ProjectId(project.id),
                )
            )
        if children:
            total = sum(c.shares for c in children)
            organisations.append(ShareAccount(org.name, total, tuple(children)))
    programme = ShareAccount("general", 1.0, tuple(organisations))
    return FairShare(ShareAccount("centre", 1.0, (programme,)), dict(usage), dict(user_usage))
