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
  recorded for the account, so a project that has used its GPU-hours at the site waits
  until its allocation is topped up; where Slurm's record holds less than gpucenter charged
  for the project's jobs there (its RawUsage was reset, or decayed), the limit comes down by
  the difference (`forgotten_minutes`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, func, select
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
    project_account_name,
    read_actual,
    read_usage_minutes,
)
from gpucenter.dispatch.slurm.cli import SlurmCli
from gpucenter.dispatch.slurm.dispatcher import cluster_name
from gpucenter.domain.allocations import AllocationState
from gpucenter.persistence.tables import (
    AllocationRow,
    JobRow,
    LedgerEntryRow,
    MembershipRow,
    OrganisationRow,
    ProjectRow,
    SiteRow,
    UserRow,
)
from gpucenter.services.allocations import ProjectStanding, project_standings
from gpucenter.services.sites.slurm_settings import SlurmSettings

# The cluster-facing steps are part of this face too: `gpucenter slurm sync` shows the plan
# (a dry run) before applying it, and the CLI reaches clusters through services only.
__all__ = [
    "SyncOutcome",
    "apply_sync",
    "desired_state",
    "forgotten_minutes",
    "plan_sync",
    "read_actual",
    "sync_site",
]


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
        parent = org_account(org.name, programme, top)
        share = max(1, round(standing.hours))
        totals[parent] += share
        totals[prg] += share
        parents[parent] = (prg, org.name)
        parents[prg] = (top, programme or "allocations made by the centre directly")
        exhausted = _exhausted_as(s, standing)
        opportunistic = exhausted is Enforcement.OPPORTUNISTIC
        state.accounts[project_account_name(project_account(project.name), top)] = AccountState(
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
        account = project_account_name(project_account(project), top)
        state.users[username].add(account)
        state.user_shares[(username, account)] = 1
    return state


RECORD_LAG_S = 600.0
"""Charges younger than this are not compared with Slurm's usage record yet."""


@dataclass
class SyncOutcome:
    """What one sync round of a site planned, applied, could not apply, and left alone."""

    commands: list[SyncCommand] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{len(self.done)} of {len(self.commands)} change(s) applied"]
        parts += [f"FAILED {cmd}: {why}" for cmd, why in self.failed]
        parts += self.problems
        return "; ".join(parts)


def forgotten_minutes(
    s: Session,
    cli: SlurmCli,
    cluster: str,
    top: str,
    site: str | None,
    limited: set[str],
    now: datetime,
) -> dict[str, int]:
    """GPU-minutes gpucenter charged for each project's jobs at this site that Slurm's own
    usage record (GrpTRESRaw) no longer counts: an operator reset its RawUsage, or usage
    decayed. Slurm compares the GPU-minutes limit with that record, so the limit must come
    down by as much for the site never to run more than the ledger says is left."""
    projects = {
        project_account_name(project_account(p.name), top): p.id
        for p in s.scalars(select(ProjectRow))
    }
    wanted = limited & set(projects)
    if not wanted:
        return {}
    recorded = read_usage_minutes(cli, wanted)
    if not recorded:
        return {}
    site_id = s.scalar(select(SiteRow.id).where(SiteRow.name == site)) if site else None
    here: ColumnElement[bool] = LedgerEntryRow.source.like(f"slurm:{cluster}:%")
    # Slurm folds usage in every PriorityCalcPeriod: what was charged lately may not be in
    # its record yet, and must not lower a limit for a moment (the next sync would undo it).
    settled = LedgerEntryRow.created_at < now - timedelta(seconds=RECORD_LAG_S)
    if site_id is not None:
        here = here | LedgerEntryRow.job_id.in_(select(JobRow.id).where(JobRow.site_id == site_id))
    charged = dict(
        s.execute(
            select(AllocationRow.project_id, func.sum(LedgerEntryRow.gpu_seconds))
            .join(AllocationRow, AllocationRow.id == LedgerEntryRow.allocation_id)
            .where(here, settled)
            .group_by(AllocationRow.project_id)
        )
        .tuples()
        .all()
    )
    out: dict[str, int] = {}
    for account in wanted:
        ledger_minutes = float(charged.get(projects[account]) or 0.0) / 60.0
        gap = int(ledger_minutes - recorded.get(account, 0))
        if gap >= 1:
            out[account] = gap
    return out


def sync_site(
    sessions: sessionmaker[Session],
    settings: SlurmSettings,
    now: datetime,
    apply: bool = True,
    site: str | None = None,
) -> SyncOutcome:
    """Plan (and apply) one site's sync: what the scheduler leader runs every few minutes,
    and at once when a job finds its account missing. Every command is tried; failures and
    names that cannot be made are reported in the outcome, never stop the rest."""
    cli = settings.cli()
    cluster = settings.cluster or cluster_name(cli)
    top = settings.top_account
    actual = read_actual(cli, cluster, top)
    with sessions() as s:
        desired = desired_state(s, top, now, settings.gpu_types)
        limited = {k for k, v in desired.accounts.items() if v.gpu_minutes is not None}
        desired.forgotten = forgotten_minutes(s, cli, cluster, top, site, limited, now)
    outcome = SyncOutcome()
    outcome.commands = plan_sync(desired, actual, cluster, top, outcome.problems)
    if apply:
        outcome.done = apply_sync(cli, outcome.commands, outcome.failed)
        if settings.submit_rule_dir is not None:
            try:
                outcome.done += install_submit_rule(settings, settings.submit_rule_dir)
            except OSError as exc:
                outcome.failed.append((f"submit rule in {settings.submit_rule_dir}", str(exc)))
    return outcome


def _rule_uids() -> tuple[int, ...]:
    """Who may submit to project accounts: root (the server) and the SlurmUser."""
    import pwd

    try:
        return (0, pwd.getpwnam("slurm").pw_uid)
    except KeyError:
        return (0,)


def submit_rule_script() -> str:
    """The site's job_submit.lua (`dispatch.slurm.submit_rule`)."""
    from gpucenter.dispatch.slurm import submit_rule

    return submit_rule.render(_rule_uids())


def install_submit_rule(settings: SlurmSettings, conf_dir: Path) -> list[str]:
    """Write the site's submit rule (`dispatch.slurm.submit_rule`) into `conf_dir` and make
    this namespace refuse outside submissions, or not, as ``outside_submissions`` says; what
    changed. Root and the SlurmUser may submit to project accounts (the server is root)."""
    from gpucenter.dispatch.slurm import submit_rule

    return submit_rule.install(
        conf_dir,
        settings.top_account,
        refuse=settings.outside_submissions == "refuse",
        allowed_uids=_rule_uids(),
    )
