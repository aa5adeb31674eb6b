"""Keeping a Slurm site's accounts and limits in step with gpucenter: the desired state.

The sync is a reconciliation (`gpucenter.dispatch.slurm.accounts` reads the cluster, plans
and applies the ``sacctmgr`` commands); this module builds what the site *should* look like
from gpucenter's database, and `sync_site` runs the whole round for one site.

- A project sits under the programme of its largest current allocation; projects whose
  allocations came from no programme (made by the centre directly) under ``<top>_direct``.
  An organisation has one account per programme it has projects in.
- ``Fairshare`` of a project: the GPU-hours of its active allocations (at least 1); of an
  organisation or programme: the sum below it; of a user: 1 (members share a project
  equally). That is the same tree and the same shares gpucenter's own fair share uses.
- **QOS**: the sync creates the ``normal`` and ``opportunistic`` QOS where missing and gives
  each project account both (default ``normal``). A project whose allocations are all
  exhausted under a programme that moves such projects to opportunistic gets only
  ``opportunistic``; one whose programme *holds* them is held (nothing new submitted or
  started), until a top-up or a new allocation makes it active again and the next sync
  releases it.
- ``GrpTRESMins=gres/gpu=<minutes>`` on a project: 60 x the GPU-hours of its active
  allocations for this site's GPU types (0 when it has none: with ``safe`` enforcement its
  jobs then wait with ``AssocGrpGRESMinutes``). Slurm compares it with the usage it has
  recorded for the account (no decay, no reset on a test cluster), so a project that has used
  its GPU-hours at the site waits until its allocation is topped up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.accounting import Enforcement
from gpucenter.dispatch.base import project_account
from gpucenter.dispatch.slurm.accounts import (
    QOS_NORMAL,
    QOS_OPPORTUNISTIC,
    AccountState,
    SiteState,
    SyncCommand,
    apply_sync,
    org_account,
    plan_sync,
    programme_account,
    read_actual,
)
from gpucenter.dispatch.slurm.dispatcher import cluster_name
from gpucenter.domain.allocations import AllocationState
from gpucenter.persistence.tables import (
    MembershipRow,
    OrganisationRow,
    ProjectRow,
    UserRow,
)
from gpucenter.services.allocations import ProjectStanding, project_standings
from gpucenter.services.sites.slurm_settings import SlurmSettings

# The cluster-facing steps are part of this face too: `gpucenter slurm sync` shows the plan
# (a dry run) before applying it, and the CLI reaches clusters through services only.
__all__ = ["apply_sync", "desired_state", "plan_sync", "read_actual", "sync_site"]


def _exhausted_as(s: Session, standing: ProjectStanding) -> Enforcement | None:
    """How the project is enforced when every current allocation is exhausted."""
    from gpucenter.services.accounting.budgets import enforcement_for

    if not standing.states or any(st != AllocationState.EXHAUSTED for st, _ in standing.states):
        return None
    actions = {enforcement_for(s, programme_id) for _, programme_id in standing.states}
    only = Enforcement.OPPORTUNISTIC
    return only if actions == {only} else Enforcement.HOLD


def desired_state(s: Session, top: str, now: datetime, gpu_types: Sequence[str] = ()) -> SiteState:
    """What the site should look like, from organisations, projects, members and allocations."""
    standings = project_standings(s, now, gpu_types)
    state = SiteState()
    orgs = {o.id: o for o in s.scalars(select(OrganisationRow))}
    totals: dict[str, int] = defaultdict(int)
    parents: dict[str, tuple[str, str]] = {}  # account -> (parent, description)
    both = ",".join(sorted((QOS_NORMAL, QOS_OPPORTUNISTIC)))
    for project in s.scalars(select(ProjectRow).order_by(ProjectRow.name)):
        org = orgs[project.organisation_id]
        standing = standings.get(project.id) or ProjectStanding()
        programme = standing.programme
        prg = programme_account(programme, top)
        parent = org_account(org.name, programme)
        share = max(1, round(standing.hours))
        totals[parent] += share
        totals[prg] += share
        parents[parent] = (prg, org.name)
        parents[prg] = (top, programme or "allocations made by the centre directly")
        exhausted = _exhausted_as(s, standing)
        opportunistic = exhausted is Enforcement.OPPORTUNISTIC
        state.accounts[project_account(project.name)] = AccountState(
            parent,
            share,
            round(standing.hours * 60),
            project.title or project.name,
            qos=QOS_OPPORTUNISTIC if opportunistic else both,
            default_qos=QOS_OPPORTUNISTIC if opportunistic else QOS_NORMAL,
            held=exhausted is Enforcement.HOLD,
        )
    for name, (parent, description) in parents.items():
        state.accounts[name] = AccountState(parent, max(1, totals[name]), None, description)
    members = s.execute(
        select(UserRow.username, ProjectRow.name)
        .join(MembershipRow, MembershipRow.user_id == UserRow.id)
        .join(ProjectRow, ProjectRow.id == MembershipRow.project_id)
        .order_by(UserRow.username, ProjectRow.name)
    )
    for username, project in members:
        account = project_account(project)
        state.users[username].add(account)
        state.user_shares[(username, account)] = 1
    return state


def sync_site(
    sessions: sessionmaker[Session], settings: SlurmSettings, now: datetime, apply: bool = True
) -> list[SyncCommand]:
    """Plan (and apply) one site's sync: what the scheduler leader runs every few minutes."""
    cli = settings.cli()
    cluster = settings.cluster or cluster_name(cli)
    with sessions() as s:
        desired = desired_state(s, settings.top_account, now, settings.gpu_types)
    commands = plan_sync(
        desired, read_actual(cli, cluster, settings.top_account), cluster, settings.top_account
    )
    if apply:
        apply_sync(cli, commands)
    return commands
