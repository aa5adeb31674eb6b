"""Slurm's side of the accounts sync: account names, states, reading, planning, applying.

The sync works by reconciliation, as ColdFront does: the control plane builds the *desired*
`SiteState` (from its database: `gpucenter.services.slurm.sync`), `read_actual` reads the
cluster's with ``sacctmgr -P show``, `plan_sync` turns the difference into exact ``sacctmgr``
commands (shown first: a dry run) and `apply_sync` runs them. Applying twice changes nothing
the second time.

The account tree, all under one top account (``gpucenter`` by default, so that accounts an
operator made by hand elsewhere are never touched)::

    root -> gpucenter -> prg_<programme> -> org_<organisation>[_<programme>] -> <project> -> users

A project's account is named after the project (`dispatch.base.project_account`: the
account every `LaunchRequest` is charged to); an organisation has one account per programme
it has projects in (`org_account`: account names are unique in a cluster); allocations made
by the centre directly sit under ``<top>_direct`` (`programme_account`).

A held account has ``GrpSubmitJobs=0`` and ``GrpJobs=0``: Slurm refuses new submissions
under it (``sbatch -A``, outside gpucenter too) and starts none of its queued jobs; releasing
sets both to ``-1``. Running jobs are never killed.

Removing a user whose default account is going away: the default is first moved to another
account the user keeps; a user left with no account at all is deleted (which removes the
association). Accounts go last, children before parents.
"""

from __future__ import annotations

import re
import shlex
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from gpucenter.dispatch.slurm.cli import SlurmCli

__all__ = [
    "QOS_NORMAL",
    "QOS_OPPORTUNISTIC",
    "AccountState",
    "SiteState",
    "SyncCommand",
    "apply_sync",
    "org_account",
    "plan_sync",
    "programme_account",
    "read_actual",
]


# ------------------------------------------------------------------------------- names
_SLUG = re.compile(r"[^a-z0-9]+")


def _slug(name: str) -> str:
    return _SLUG.sub("_", name.lower()).strip("_")[:40] or "unnamed"


def org_account(name: str, programme: str | None = None) -> str:
    """A Slurm account name for an organisation under a programme (Slurm lowercases names;
    no spaces; one account per programme, since account names are unique in a cluster)."""
    return f"org_{_slug(name)}" + (f"_{_slug(programme)}" if programme else "")


def programme_account(name: str | None, top: str = "gpucenter") -> str:
    """The Slurm account of a programme; ``<top>_direct`` for allocations made directly
    (named after the top account so that two trees on one cluster never share it)."""
    return f"prg_{_slug(name)}" if name else f"{top}_direct"


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


def apply_sync(cli: SlurmCli, commands: Iterable[SyncCommand]) -> list[str]:
    """Run the commands in order; stops at the first that fails (DispatchError)."""
    done: list[str] = []
    for command in commands:
        cli.run(command.argv[0], command.argv[1:])
        done.append(str(command))
    return done
