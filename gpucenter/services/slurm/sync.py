"""Keeping a Slurm site's accounts and limits in step with gpucenter, by reconciliation.

As ColdFront does it: build the *desired* state from the database, read the *actual* state
with ``sacctmgr -P show``, and turn the difference into exact ``sacctmgr`` commands, shown
first (dry run) and applied on request. Applying twice changes nothing the second time.

The account tree (all under one top account, ``gpucenter`` by default, so that accounts an
operator made by hand elsewhere are never touched)::

    root -> gpucenter -> prg_<programme> -> org_<organisation>[_<programme>] -> <project> -> users

- A project sits under the programme of its largest current allocation; projects whose
  allocations came from no programme (made by the centre directly) under ``gpucenter_direct``
  (``<top>_direct``). An organisation has one account per programme it has projects in
  (account names are unique in a cluster): ``org_<org>`` under the direct one,
  ``org_<org>_<programme>`` under a programme.
- ``Fairshare`` of a project: the GPU-hours of its active allocations (at least 1); of an
  organisation or programme: the sum below it; of a user: 1 (members share a project
  equally). That is the same tree and the same shares gpucenter's own fair share uses.
- **QOS**: the sync creates the ``normal`` and ``opportunistic`` QOS where missing and gives
  each project account both (default ``normal``). A project whose allocations are all
  exhausted under a programme that moves such projects to opportunistic gets only
  ``opportunistic``; one whose programme *holds* them gets ``GrpSubmitJobs=0`` and
  ``GrpJobs=0``: Slurm refuses new submissions under the account (``sbatch -A``, outside
  gpucenter too) and starts none of its queued jobs, until a top-up or a new allocation
  makes it active again and the next sync lifts both (``-1``). Running jobs are never killed.
- ``GrpTRESMins=gres/gpu=<minutes>`` on a project: 60 x the GPU-hours of its active
  allocations for this site's GPU types (0 when it has none: with ``safe`` enforcement its
  jobs then wait with ``AssocGrpGRESMinutes``). Slurm compares it with the usage it has
  recorded for the account (no decay, no reset on a test cluster), so a project that has used
  its GPU-hours at the site waits until its allocation is topped up.

Removing a user whose default account is going away: the default is first moved to another
account the user keeps; a user left with no account at all is deleted (which removes the
association). Accounts go last, children before parents.

This module also holds the settings of a Slurm site and the wiring of a `SlurmDispatcher` to
the database (who a job runs as, under which account).
"""

from __future__ import annotations

import re
import shlex
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.accounting import Enforcement
from gpucenter.dispatch.base import DispatchError, LaunchRequest
from gpucenter.dispatch.slurm.cli import SlurmCli
from gpucenter.dispatch.slurm.dispatcher import SlurmDispatcher, SlurmObserver, SlurmSubmission
from gpucenter.domain.allocations import AllocationState
from gpucenter.domain.clock import Clock
from gpucenter.persistence.tables import (
    JobRow,
    MembershipRow,
    OrganisationRow,
    ProjectRow,
    UserRow,
)
from gpucenter.services.allocations import ProjectStanding, project_standings
from gpucenter.services.sites.slurm_settings import SlurmSettings

__all__ = [
    "AccountState",
    "SiteState",
    "SlurmSettings",
    "SyncCommand",
    "apply_sync",
    "desired_state",
    "make_slurm_dispatcher",
    "org_account",
    "plan_sync",
    "programme_account",
    "read_actual",
    "sync_site",
]


_SLUG = re.compile(r"[^a-z0-9]+")


def _slug(name: str) -> str:
    return _SLUG.sub("_", name.lower()).strip("_")[:40] or "unnamed"


def org_account(name: str, programme: str | None = None) -> str:
    """A Slurm account name for an organisation under a programme (Slurm lowercases names;
    no spaces; one account per programme, since account names are unique in a cluster)."""
    return f"org_{_slug(name)}" + (f"_{_slug(programme)}" if programme else "")


# ------------------------------------------------------------------------------- states
QOS_NORMAL = "normal"
QOS_OPPORTUNISTIC = "opportunistic"


@dataclass(frozen=True, slots=True)
class AccountState:
    parent: str
    fairshare: int
    gpu_minutes: int | None  # GrpTRESMins gres/gpu; None: no limit (organisations)
    description: str = ""
    qos: str | None = None  # QOS list, sorted, comma-separated; None: not managed (inherited)
    default_qos: str | None = None
    held: bool = False  # GrpSubmitJobs=0 and GrpJobs=0: nothing new is submitted or started


@dataclass(slots=True)
class SiteState:
    """Accounts under the top account, and users with their accounts and default."""

    accounts: dict[str, AccountState] = field(default_factory=dict)
    users: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    defaults: dict[str, str] = field(default_factory=dict)
    user_shares: dict[tuple[str, str], int] = field(default_factory=dict)
    has_top: bool = True
    qos: set[str] = field(default_factory=lambda: {QOS_NORMAL, QOS_OPPORTUNISTIC})
    other_accounts: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    """Users' associations outside the managed tree (never changed, but they count when a
    user would otherwise be left without any account)."""


def programme_account(name: str | None, top: str = "gpucenter") -> str:
    """The Slurm account of a programme; ``<top>_direct`` for allocations made directly
    (named after the top account so that two trees on one cluster never share it)."""
    return f"prg_{_slug(name)}" if name else f"{top}_direct"


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
        state.accounts[project.name] = AccountState(
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
        state.users[username].add(project)
        state.user_shares[(username, project)] = 1
    return state


def _gpu_minutes(grp_tres_mins: str) -> int | None:
    for part in grp_tres_mins.split(","):
        key, _, value = part.partition("=")
        if key == "gres/gpu" and value.lstrip("-").isdigit():
            return int(value) if int(value) >= 0 else None
    return None


def read_actual(cli: SlurmCli, cluster: str, top: str) -> SiteState:
    """The site's accounts under `top` and its users, from ``sacctmgr -P show``."""
    rows = cli.parsable(
        "sacctmgr",
        [
            "-n",
            "-P",
            "show",
            "assoc",
            f"cluster={cluster}",
            "format=Account,User,ParentName,Share,GrpTRESMins,GrpSubmit,QOS,DefaultQOS",
        ],
        ("account", "user", "parent", "share", "grp", "submit", "qos", "defqos"),
    )
    parents = {r["account"]: r["parent"] for r in rows if not r["user"]}
    managed: set[str] = set()
    changed = True
    while changed:  # the accounts below `top`, at any depth
        changed = False
        for account, parent in parents.items():
            if account not in managed and (parent == top or parent in managed):
                managed.add(account)
                changed = True
    state = SiteState(has_top=top in parents)
    for r in rows:
        share = int(r["share"]) if r["share"].lstrip("-").isdigit() else 1
        if not r["user"]:
            if r["account"] in managed:
                state.accounts[r["account"]] = AccountState(
                    r["parent"],
                    share,
                    _gpu_minutes(r["grp"]),
                    qos=",".join(sorted(q for q in r["qos"].split(",") if q)),
                    default_qos=r["defqos"],
                    held=r["submit"] == "0",
                )
        elif r["account"] in managed:
            state.users[r["user"]].add(r["account"])
            state.user_shares[(r["user"], r["account"])] = share
        else:
            state.other_accounts[r["user"]].add(r["account"])
    users = cli.parsable("sacctmgr", ["-n", "-P", "show", "user"], ("user", "default", "admin"))
    state.defaults = {u["user"]: u["default"] for u in users}
    state.qos = {
        q["name"]
        for q in cli.parsable("sacctmgr", ["-n", "-P", "show", "qos", "format=Name"], ("name",))
    }
    return state


# ---------------------------------------------------------------------------- planning
@dataclass(frozen=True, slots=True)
class SyncCommand:
    argv: tuple[str, ...]
    why: str

    def __str__(self) -> str:
        return shlex.join(self.argv)


def _cmd(why: str, *args: str) -> SyncCommand:
    return SyncCommand(("sacctmgr", "-i", *args), why)


_HOLD = ("GrpSubmitJobs=0", "GrpJobs=0")
_RELEASE = ("GrpSubmitJobs=-1", "GrpJobs=-1")


def _depth(name: str, accounts: dict[str, AccountState]) -> int:
    depth = 0
    while name in accounts and depth < 50:
        name = accounts[name].parent
        depth += 1
    return depth


def plan_sync(desired: SiteState, actual: SiteState, cluster: str, top: str) -> list[SyncCommand]:
    """The sacctmgr commands that turn `actual` into `desired`, in an order that works."""
    c = f"cluster={cluster}"
    adds: list[SyncCommand] = []
    modifies: list[SyncCommand] = []
    removes: list[SyncCommand] = []
    want = dict(desired.accounts)
    for missing in sorted({QOS_NORMAL, QOS_OPPORTUNISTIC} - actual.qos):
        adds.append(_cmd(f"QOS {missing} for gpucenter's jobs", "add", "qos", missing))
    if not actual.has_top:
        adds.append(
            _cmd(f"top account {top}", "add", "account", top, c, "parent=root", "fairshare=1")
        )
    for name in sorted(want, key=lambda n: (_depth(n, want), n)):
        spec = want[name]
        have = actual.accounts.get(name)
        limit = [] if spec.gpu_minutes is None else [f"GrpTRESMins=gres/gpu={spec.gpu_minutes}"]
        qos = [] if spec.qos is None else [f"QOS={spec.qos}", f"DefaultQOS={spec.default_qos}"]
        if have is None:
            adds.append(
                _cmd(
                    f"new account {name}" + (" (held: its allocations are used up)" * spec.held),
                    *("add", "account", name, c, f"parent={spec.parent}"),
                    f"description={spec.description or name}",
                    f"fairshare={spec.fairshare}",
                    *limit,
                    *qos,
                    *(_HOLD if spec.held else ()),
                )
            )
            continue
        where = ("modify", "account", "where", f"name={name}", c, "set")
        if have.parent != spec.parent:
            modifies.append(
                _cmd(f"{name} moves under {spec.parent}", *where, f"parent={spec.parent}")
            )
        if have.fairshare != spec.fairshare:
            modifies.append(
                _cmd(
                    f"{name}: fairshare {have.fairshare} -> {spec.fairshare}",
                    *where,
                    f"fairshare={spec.fairshare}",
                )
            )
        if have.gpu_minutes != spec.gpu_minutes:
            value = -1 if spec.gpu_minutes is None else spec.gpu_minutes
            modifies.append(
                _cmd(
                    f"{name}: GPU-minutes {have.gpu_minutes} -> {spec.gpu_minutes}",
                    *where,
                    f"GrpTRESMins=gres/gpu={value}",
                )
            )
        if spec.qos is not None and (have.qos, have.default_qos) != (spec.qos, spec.default_qos):
            modifies.append(_cmd(f"{name}: QOS {have.qos} -> {spec.qos}", *where, *qos))
        if have.held != spec.held:
            why = "allocations used up: hold" if spec.held else "topped up: release"
            modifies.append(_cmd(f"{name}: {why}", *where, *(_HOLD if spec.held else _RELEASE)))
    for user in sorted(desired.users):
        for account in sorted(desired.users[user] - actual.users.get(user, set())):
            adds.append(
                _cmd(f"{user} joins {account}", "add", "user", user, f"account={account}", c)
            )
    # Defaults before removals: sacctmgr will not remove a user's default association.
    for user in sorted(set(desired.users) | set(actual.users)):
        keep = desired.users.get(user, set()) | actual.other_accounts.get(user, set())
        current = actual.defaults.get(user)
        gone = sorted(actual.users.get(user, set()) - desired.users.get(user, set()))
        if user in desired.users and current not in keep:
            new_default = sorted(desired.users[user])[0]
            if current is not None:
                modifies.append(
                    _cmd(
                        f"{user}: default account {current} -> {new_default}",
                        *("modify", "user", "where", f"name={user}", c, "set"),
                        f"defaultaccount={new_default}",
                    )
                )
        if not gone:
            continue
        if not keep:
            removes.append(_cmd(f"{user} has no account left", "delete", "user", f"name={user}", c))
            continue
        if current in gone and user not in desired.users:
            # Keeps only accounts outside gpucenter's tree: default to one of those first.
            modifies.append(
                _cmd(
                    f"{user}: default account {current} -> {sorted(keep)[0]}",
                    *("modify", "user", "where", f"name={user}", c, "set"),
                    f"defaultaccount={sorted(keep)[0]}",
                )
            )
        for account in gone:
            removes.append(
                _cmd(
                    f"{user} leaves {account}",
                    *("delete", "user", f"name={user}", f"account={account}", c),
                )
            )
    stale = [a for a in actual.accounts if a not in want and a != top]
    for name in sorted(stale, key=lambda n: (-_depth(n, actual.accounts), n)):
        removes.append(
            _cmd(f"account {name} is no longer wanted", "delete", "account", f"name={name}", c)
        )
    return adds + modifies + removes


def sync_site(
    sessions: sessionmaker[Session], settings: SlurmSettings, now: datetime, apply: bool = True
) -> list[SyncCommand]:
    """Plan (and apply) one site's sync: what the scheduler leader runs every few minutes."""
    from gpucenter.dispatch.slurm.dispatcher import cluster_name

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


def apply_sync(cli: SlurmCli, commands: Iterable[SyncCommand]) -> list[str]:
    """Run the commands in order; stops at the first that fails (DispatchError)."""
    done: list[str] = []
    for command in commands:
        cli.run(command.argv[0], command.argv[1:])
        done.append(str(command))
    return done


# ------------------------------------------------------------- dispatcher <-> database
class DatabaseResolver:
    """What sbatch needs for a gpucenter job: its project's account, shape and owner."""

    def __init__(self, sessions: sessionmaker[Session], run_as_owner: bool) -> None:
        self._sessions = sessions
        self._run_as_owner = run_as_owner

    def __call__(self, request: LaunchRequest) -> SlurmSubmission:
        with self._sessions() as s:
            row = s.execute(
                select(JobRow, ProjectRow.name, UserRow.username)
                .join(ProjectRow, ProjectRow.id == JobRow.project_id)
                .join(UserRow, UserRow.id == JobRow.user_id)
                .where(JobRow.id == int(request.job_id))
            ).one_or_none()
        if row is None:
            raise DispatchError(f"job {request.job_id} is not in the database")
        job, project, username = row
        return SlurmSubmission(
            account=project,
            gpu_type=job.gpu_type,
            gpus_per_node=job.gpus_per_node,
            nodes=job.nodes,
            job_name=job.name or f"gpucenter-{job.id}",
            user=username if self._run_as_owner else None,
            # Only a QOS other than the default is named: a site whose accounts were never
            # synced has no opportunistic QOS, and normal jobs must still run there.
            qos=job.qos if job.qos and job.qos != QOS_NORMAL else None,
        )


def make_slurm_dispatcher(
    sessions: sessionmaker[Session],
    settings: SlurmSettings,
    clock: Clock | None = None,
    observer: SlurmObserver | None = None,
) -> SlurmDispatcher:
    """A SlurmDispatcher wired to the database (accounts, owners, and the job observer)."""
    from gpucenter.services.slurm.usage import DatabaseObserver

    return SlurmDispatcher(
        settings.log_dir.resolve(),
        cli=settings.cli(),
        partition=settings.partition,
        clock=clock,
        resolver=DatabaseResolver(sessions, settings.run_as_owner),
        observer=observer if observer is not None else DatabaseObserver(sessions),
        cluster=settings.cluster,
    )
