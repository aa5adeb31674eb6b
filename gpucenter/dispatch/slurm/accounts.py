"""Slurm's side of the accounts sync: account names, states, reading, planning, applying.

The sync works by reconciliation, as ColdFront does: the control plane builds the *desired*
`SiteState` (from its database: `gpucenter.services.slurm.sync`), `read_actual` reads the
cluster's with ``sacctmgr -P show``, `plan_sync` turns the difference into exact ``sacctmgr``
commands (shown first: a dry run) and `apply_sync` runs them. Applying twice changes nothing
the second time.

The account tree, all under one top account (``gpucenter`` by default, so that accounts an
operator made by hand elsewhere are never touched), every name in the top account's
namespace (account names are unique in a whole cluster, and an ``alpha`` made by someone
else under another tree must never stop ours: sacctmgr would answer "Nothing new added")::

    root -> <top> -> <top>_prg_<programme> -> <top>_org_<organisation>[_<programme>]
         -> <top>_<project> -> users

A project's account is `project_account_name` (the project's name, which is already a valid
account name, after the top's); an organisation has one account per programme it has
projects in (`org_account`); allocations made by the centre directly sit under
``<top>_direct`` (`programme_account`). A name that exists outside the tree all the same is
reported and left alone, with what would go under it, and the rest of the sync goes on.

Everything gpucenter sets is kept as it wants it (*drift* is corrected): fair shares, the
GPU-minutes limit, the QOS and their ``UsageFactor`` (1: Slurm must count the usage its
limits compare with), and no other limit on our accounts or on their users (a ``GrpJobs``
set alone, a user's ``MaxJobs``...), except the hold. Usage Slurm has forgotten (its
``RawUsage`` reset, or decayed) lowers the GPU-minutes limit by as much, so that Slurm never
lets a project run more than gpucenter's ledger says is left (`SiteState.forgotten`).

A held account has ``GrpSubmitJobs=0`` and ``GrpJobs=0``: Slurm refuses new submissions
under it (``sbatch -A``, outside gpucenter too) and starts none of its queued jobs; releasing
sets both to ``-1``. Running jobs are never killed.

Removing a user whose default account is going away: the default is first moved to another
account the user keeps; a user left with no account at all is deleted (which removes the
association). Accounts go last, children before parents. `apply_sync` runs every command
even when some fail, and says which failed and why.
"""

from __future__ import annotations

import re
import shlex
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from gpucenter.dispatch.base import DispatchError
from gpucenter.dispatch.slurm.cli import SlurmCli, SlurmUnavailable

__all__ = [
    "QOS_NORMAL",
    "QOS_OPPORTUNISTIC",
    "AccountState",
    "SiteState",
    "SyncCommand",
    "SyncFailed",
    "apply_sync",
    "org_account",
    "plan_sync",
    "programme_account",
    "project_account_name",
    "read_actual",
]


# ------------------------------------------------------------------------------- names
_SLUG = re.compile(r"[^a-z0-9]+")


def _slug(name: str) -> str:
    return _SLUG.sub("_", name.lower()).strip("_")[:40] or "unnamed"


def project_account_name(project: str, top: str = "gpucenter") -> str:
    """The Slurm account a project's jobs are charged to: in the top account's namespace.
    Project names are ``[a-z][a-z0-9_.-]*``, which Slurm takes as they are."""
    return f"{top}_{project}"


def org_account(name: str, programme: str | None = None, top: str = "gpucenter") -> str:
    """A Slurm account name for an organisation under a programme (Slurm lowercases names;
    no spaces; one account per programme, since account names are unique in a cluster)."""
    return f"{top}_org_{_slug(name)}" + (f"_{_slug(programme)}" if programme else "")


def programme_account(name: str | None, top: str = "gpucenter") -> str:
    """The Slurm account of a programme; ``<top>_direct`` for allocations made directly."""
    return f"{top}_prg_{_slug(name)}" if name else f"{top}_direct"


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
    limits: tuple[tuple[str, str], ...] = ()
    """Read from the site: every other limit that is set (see `_LIMITS`), as (name, value)."""

    @property
    def wanted_limits(self) -> tuple[tuple[str, str], ...]:
        return _HOLD_LIMITS if self.held else ()


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
    elsewhere: set[str] = field(default_factory=set)
    """Account names that exist in the cluster outside the managed tree."""
    user_limits: dict[tuple[str, str], tuple[tuple[str, str], ...]] = field(default_factory=dict)
    """Limits set on users' associations under managed accounts (gpucenter sets none)."""
    usage_factor: dict[str, float] = field(default_factory=dict)
    """Each QOS's UsageFactor (read); desired: 1 for gpucenter's QOS."""
    forgotten: dict[str, int] = field(default_factory=dict)
    """Desired only: GPU-minutes gpucenter charged for a project's jobs at the site that
    Slurm's usage record no longer has (RawUsage reset, decay): its limit is lowered."""


def _gpu_minutes(grp_tres_mins: str) -> int | None:
    for part in grp_tres_mins.split(","):
        key, _, value = part.partition("=")
        if key == "gres/gpu" and value.lstrip("-").isdigit():
            return int(value) if int(value) >= 0 else None
    return None


_LIMITS = (
    "GrpJobs",
    "GrpSubmit",
    "MaxJobs",
    "MaxSubmit",
    "GrpTRES",
    "MaxTRES",
    "GrpWall",
    "MaxWall",
)
_HOLD_LIMITS = (("GrpJobs", "0"), ("GrpSubmit", "0"))
# Names sacctmgr's `set` takes for the fields `show` prints.
_SET_NAME = {"GrpSubmit": "GrpSubmitJobs", "MaxSubmit": "MaxSubmitJobs"}


def _limits(row: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The limits set on an association, and GPU-minutes limits on TRES other than GPUs."""
    found = [(name, row[name]) for name in _LIMITS if row.get(name)]
    for part in row.get("GrpTRESMins", "").split(","):
        key, _, value = part.partition("=")
        if key and key != "gres/gpu" and value:
            found.append((f"GrpTRESMins:{key}", value))
    return tuple(sorted(found))


def read_actual(cli: SlurmCli, cluster: str, top: str) -> SiteState:
    """The site's accounts under `top` and its users, from ``sacctmgr -P show``."""
    fields = (
        "Account",
        "User",
        "ParentName",
        "Share",
        "GrpTRESMins",
        *_LIMITS,
        "QOS",
        "DefaultQOS",
    )
    rows = cli.parsable(
        "sacctmgr",
        ["-n", "-P", "show", "assoc", f"cluster={cluster}", "format=" + ",".join(fields)],
        fields,
    )
    parents = {r["Account"]: r["ParentName"] for r in rows if not r["User"]}
    managed: set[str] = set()
    changed = True
    while changed:  # the accounts below `top`, at any depth
        changed = False
        for account, parent in parents.items():
            if account not in managed and (parent == top or parent in managed):
                managed.add(account)
                changed = True
    state = SiteState(has_top=top in parents)
    state.elsewhere = set(parents) - managed - {top}
    for r in rows:
        share = int(r["Share"]) if r["Share"].lstrip("-").isdigit() else 1
        if not r["User"]:
            if r["Account"] in managed:
                limits = _limits(r)
                state.accounts[r["Account"]] = AccountState(
                    r["ParentName"],
                    share,
                    _gpu_minutes(r["GrpTRESMins"]),
                    qos=",".join(sorted(q for q in r["QOS"].split(",") if q)),
                    default_qos=r["DefaultQOS"],
                    held=dict(limits).get("GrpSubmit") == "0",
                    limits=limits,
                )
        elif r["Account"] in managed:
            state.users[r["User"]].add(r["Account"])
            state.user_shares[(r["User"], r["Account"])] = share
            limits = _limits(r)
            if limits or _gpu_minutes(r["GrpTRESMins"]) is not None:
                gpu = _gpu_minutes(r["GrpTRESMins"])
                extra = (("GrpTRESMins:gres/gpu", str(gpu)),) if gpu is not None else ()
                state.user_limits[(r["User"], r["Account"])] = tuple(sorted(limits + extra))
        else:
            state.other_accounts[r["User"]].add(r["Account"])
    users = cli.parsable("sacctmgr", ["-n", "-P", "show", "user"], ("user", "default", "admin"))
    state.defaults = {u["user"]: u["default"] for u in users}
    qos_rows = cli.parsable(
        "sacctmgr", ["-n", "-P", "show", "qos", "format=Name,UsageFactor"], ("name", "factor")
    )
    state.qos = {q["name"] for q in qos_rows}
    state.usage_factor = {
        q["name"]: float(q["factor"]) for q in qos_rows if _is_number(q["factor"])
    }
    return state


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_usage_minutes(cli: SlurmCli, accounts: Iterable[str]) -> dict[str, int]:
    """GPU-minutes Slurm has recorded for each account (``sshare`` GrpTRESRaw); empty when
    Slurm does not say (no multifactor priority)."""
    wanted = set(accounts)
    try:
        rows = cli.parsable(
            "sshare", ["-n", "-P", "-a", "-o", "Account,User,GrpTRESRaw"], ("a", "u", "raw")
        )
    except Exception:  # sshare unusable here: no RawUsage check this time
        return {}
    out: dict[str, int] = {}
    for r in rows:
        account = r["a"].strip()
        if r["u"] or account not in wanted:
            continue
        for part in r["raw"].split(","):
            key, _, value = part.partition("=")
            if key == "gres/gpu" and value.isdigit():
                out[account] = int(value)
    return out


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


def _placeable(
    accounts: dict[str, AccountState], actual: SiteState, problems: list[str]
) -> dict[str, AccountState]:
    """The desired accounts that can be made: not those whose name is taken outside the
    tree, nor any that would go under one of those (each reported once)."""
    out: dict[str, AccountState] = {}
    blocked = {n for n in accounts if n in actual.elsewhere and n not in actual.accounts}
    for name in sorted(blocked):
        problems.append(
            f"account {name} already exists outside gpucenter's tree: left alone, with "
            "everything under it (rename or remove that account at the site)"
        )
    for name, spec in accounts.items():
        parent, depth = name, 0
        while parent in accounts and parent not in blocked and depth < 50:
            parent, depth = accounts[parent].parent, depth + 1
        if parent not in blocked:
            out[name] = spec
    return out


def _limit_changes(
    have: tuple[tuple[str, str], ...], want: tuple[tuple[str, str], ...]
) -> list[str]:
    """`set` arguments that clear every limit in `have` not in `want` and set `want`'s."""
    wanted = dict(want)
    args: list[str] = []
    for name, value in have:
        if name in wanted:
            continue
        if name.startswith("GrpTRESMins:"):
            args.append(f"GrpTRESMins={name.split(':', 1)[1]}=-1")
        elif name in ("GrpTRES", "MaxTRES"):
            tres = ",".join(f"{p.partition('=')[0]}=-1" for p in value.split(",") if p)
            args.append(f"{name}={tres}")
        else:
            args.append(f"{_SET_NAME.get(name, name)}=-1")
    args += [f"{_SET_NAME.get(name, name)}={value}" for name, value in want]
    return args


def plan_sync(
    desired: SiteState,
    actual: SiteState,
    cluster: str,
    top: str,
    problems: list[str] | None = None,
) -> list[SyncCommand]:
    """The sacctmgr commands that turn `actual` into `desired`, in an order that works.
    What cannot be done (an account name taken outside the tree) is said in `problems`
    and left out, with everything that would go under it."""
    c = f"cluster={cluster}"
    adds: list[SyncCommand] = []
    modifies: list[SyncCommand] = []
    removes: list[SyncCommand] = []
    want = _placeable(desired.accounts, actual, problems if problems is not None else [])
    for missing in sorted({QOS_NORMAL, QOS_OPPORTUNISTIC} - actual.qos):
        adds.append(_cmd(f"QOS {missing} for gpucenter's jobs", "add", "qos", missing))
    for name in sorted({QOS_NORMAL, QOS_OPPORTUNISTIC} & actual.qos):
        factor = actual.usage_factor.get(name, 1.0)
        if factor != 1.0:
            modifies.append(
                _cmd(
                    f"QOS {name}: UsageFactor {factor:g} -> 1 (Slurm must count all usage)",
                    *("modify", "qos", "where", f"name={name}", "set", "UsageFactor=1"),
                )
            )
    if not actual.has_top:
        adds.append(
            _cmd(f"top account {top}", "add", "account", top, c, "parent=root", "fairshare=1")
        )
    for name in sorted(want, key=lambda n: (_depth(n, want), n)):
        spec = want[name]
        have = actual.accounts.get(name)
        minutes = spec.gpu_minutes
        if minutes is not None:
            minutes = max(0, minutes - desired.forgotten.get(name, 0))
        limit = [] if minutes is None else [f"GrpTRESMins=gres/gpu={minutes}"]
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
        if have.gpu_minutes != minutes:
            forgot = desired.forgotten.get(name, 0)
            why = f" (Slurm forgot {forgot} GPU-minutes of recorded usage)" if forgot else ""
            modifies.append(
                _cmd(
                    f"{name}: GPU-minutes {have.gpu_minutes} -> {minutes}{why}",
                    *where,
                    f"GrpTRESMins=gres/gpu={-1 if minutes is None else minutes}",
                )
            )
        if spec.qos is not None and (have.qos, have.default_qos) != (spec.qos, spec.default_qos):
            modifies.append(_cmd(f"{name}: QOS {have.qos} -> {spec.qos}", *where, *qos))
        have_limits = have.limits or (_HOLD_LIMITS if have.held else ())
        if have_limits != spec.wanted_limits:
            if {have_limits, spec.wanted_limits} == {(), _HOLD_LIMITS}:
                why = "allocations used up: hold" if spec.held else "topped up: release"
                modifies.append(_cmd(f"{name}: {why}", *where, *(_HOLD if spec.held else _RELEASE)))
            else:
                modifies.append(
                    _cmd(
                        f"{name}: limits {dict(have_limits)} -> {dict(spec.wanted_limits)}",
                        *where,
                        *_limit_changes(have_limits, spec.wanted_limits),
                    )
                )
    for (user, account), limits in sorted(actual.user_limits.items()):
        if user in desired.users and account in desired.users[user]:
            modifies.append(
                _cmd(
                    f"{user} in {account}: limits {dict(limits)} -> none (the account's hold)",
                    *("modify", "user", "where", f"name={user}", f"account={account}", c, "set"),
                    *_limit_changes(limits, ()),
                )
            )
    for user in sorted(desired.users):
        for account in sorted(desired.users[user] & set(want) - actual.users.get(user, set())):
            adds.append(
                _cmd(f"{user} joins {account}", "add", "user", user, f"account={account}", c)
            )
    # Defaults before removals: sacctmgr will not remove a user's default association.
    for user in sorted(set(desired.users) | set(actual.users)):
        keep = desired.users.get(user, set()) | actual.other_accounts.get(user, set())
        current = actual.defaults.get(user)
        gone = sorted(actual.users.get(user, set()) - desired.users.get(user, set()))
        if user in desired.users and current not in keep and desired.users[user] & set(want):
            new_default = sorted(desired.users[user] & set(want))[0]
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


class SyncFailed(DispatchError):
    """Some sync commands failed (all the others were applied); `failures` says which."""

    def __init__(self, failures: list[tuple[str, str]], done: list[str]) -> None:
        self.failures = failures
        self.done = done
        lines = "; ".join(f"{cmd}: {why}" for cmd, why in failures)
        super().__init__(f"{len(failures)} of {len(failures) + len(done)} failed: {lines}")


def apply_sync(
    cli: SlurmCli,
    commands: Iterable[SyncCommand],
    failures: list[tuple[str, str]] | None = None,
) -> list[str]:
    """Run every command in order; one that fails never stops the rest. The failures go to
    `failures` when given, else are raised together at the end (SyncFailed). A site that
    does not answer stops the round (SlurmUnavailable): the next round does it all again."""
    done: list[str] = []
    failed: list[tuple[str, str]] = [] if failures is None else failures
    for command in commands:
        try:
            cli.run(command.argv[0], command.argv[1:])
        except SlurmUnavailable:
            raise
        except DispatchError as exc:
            failed.append((str(command), str(exc)))
            continue
        done.append(str(command))
    if failures is None and failed:
        raise SyncFailed(failed, done)
    return done
