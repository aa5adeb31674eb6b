"""Unix accounts for gpucenter users and projects on a local site, by reconciliation.

On a real centre ColdFront asks FreeIPA for the accounts; a local site has no directory
service, so gpucenter makes the accounts itself, the same way: build the *desired* state (one
account per user, one group per project with its members), read the *actual* state
(``/etc/passwd`` and ``/etc/group`` through `pwd`/`grp`), and turn the difference into exact
``groupadd``/``useradd``/``gpasswd`` commands, shown first (dry run) and applied on request.
Applying twice changes nothing the second time.

What it owns, and nothing else: names with its prefixes (``gpc-`` for users, ``gpcp-`` for
project groups) *and* ids in its configured range. A user account is also tagged in its GECOS
field (``gpucenter user <id>``): that tag, not the name, binds an account to a gpucenter user,
so an account an operator made by hand under a colliding name is never taken over. Anything
outside the range or without the prefix is left alone and reported.

Names: the gpucenter name lowercased, when it is already a clean ``[a-z0-9-]`` slug that fits
in 32 characters (``alice`` -> ``gpc-alice``). Otherwise the lossy slug gets ``_<id>`` appended
(``Alice.Kim`` user 7 -> ``gpc-alice-kim_7``). Clean slugs never contain ``_``, so the two
forms cannot collide, and ids are unique: two gpucenter users can never be given one account.
A clean name taken by something that is not ours falls back to the ``_<id>`` form.

Nothing is ever deleted: a removed member leaves the project's group, a removed user is
dropped from every gpucenter group, but accounts and groups stay, so their ids are never
reused for someone else (files on disk still carry them). ``userdel`` is for the operator.
"""

from __future__ import annotations

import enum
import grp
import pwd
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpucenter.dispatch.isolation.identity import RunAs

__all__ = [
    "AccountPolicy",
    "Action",
    "Change",
    "CommandRunner",
    "Conflict",
    "GroupEntry",
    "IdentityError",
    "PasswdEntry",
    "ProvisioningPlan",
    "ProvisioningResult",
    "SystemAccounts",
    "TenantProject",
    "TenantUser",
    "apply_plan",
    "job_identity",
    "owner_identity",
    "plan_provisioning",
    "provision",
    "read_system_accounts",
    "unix_name",
]

NAME_MAX = 32  # Linux user and group names
_CLEAN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_PREFIX = re.compile(r"[a-z][a-z0-9]*-")


@dataclass(frozen=True, slots=True)
class AccountPolicy:
    """Where gpucenter's accounts live: an id range and two name prefixes of its own."""

    uid_min: int = 200_000
    uid_max: int = 299_999
    user_prefix: str = "gpc-"
    group_prefix: str = "gpcp-"
    home_root: Path | None = None
    """Homes are ``home_root/<name>`` (made by the dispatcher, not here); None: no home."""
    shell: str = "/usr/sbin/nologin"  # nobody logs in: jobs are started by the dispatcher

    def __post_init__(self) -> None:
        if not 1000 <= self.uid_min <= self.uid_max < 2**31 - 2:
            raise ValueError("the uid range must lie within 1000..2^31-3")
        if self.uid_min <= 65534 <= self.uid_max:
            raise ValueError("the uid range must not contain 65534 (nobody)")
        for prefix in (self.user_prefix, self.group_prefix):
            if not _PREFIX.fullmatch(prefix) or len(prefix) > 12:
                raise ValueError(f"prefix {prefix!r}: a letter, [a-z0-9], then '-'; 12 at most")
        if self.user_prefix.startswith(self.group_prefix) or self.group_prefix.startswith(
            self.user_prefix
        ):
            raise ValueError("user and group prefixes must not be prefixes of each other")
        if self.home_root is not None and not self.home_root.is_absolute():
            raise ValueError("home_root must be absolute")

    def owns_id(self, number: int) -> bool:
        return self.uid_min <= number <= self.uid_max

    def gecos(self, user_id: int) -> str:
        return f"gpucenter user {user_id}"

    def home(self, name: str) -> Path | None:
        return None if self.home_root is None else self.home_root / name


def unix_name(prefix: str, raw: str, key: int, *, force_suffix: bool = False) -> str:
    """`prefix` + a slug of `raw`; lossy or truncated slugs (or `force_suffix`) end ``_<key>``."""
    lowered = raw.lower()
    slug = "-".join(_CLEAN.findall(lowered)) or "x"
    room = NAME_MAX - len(prefix)
    if not force_suffix and slug == raw and len(slug) <= room:
        return prefix + slug
    suffix = f"_{key}"
    return prefix + slug[: room - len(suffix)].rstrip("-") + suffix


@dataclass(frozen=True, slots=True)
class TenantUser:
    """A gpucenter user who needs an account (one with a role in an active project)."""

    user_id: int
    username: str


@dataclass(frozen=True, slots=True)
class TenantProject:
    """A gpucenter project and the user ids of its current members."""

    project_id: int
    name: str
    member_ids: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    gecos: str = ""


@dataclass(frozen=True, slots=True)
class GroupEntry:
    name: str
    gid: int
    members: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SystemAccounts:
    """The machine's actual accounts, as read; test doubles build it by hand."""

    users: tuple[PasswdEntry, ...] = ()
    groups: tuple[GroupEntry, ...] = ()

    def user(self, name: str) -> PasswdEntry | None:
        return next((u for u in self.users if u.name == name), None)

    def group(self, name: str) -> GroupEntry | None:
        return next((g for g in self.groups if g.name == name), None)


def read_system_accounts() -> SystemAccounts:
    """/etc/passwd and /etc/group through NSS (`pwd`, `grp`)."""
    return SystemAccounts(
        users=tuple(PasswdEntry(p.pw_name, p.pw_uid, p.pw_gid, p.pw_gecos) for p in pwd.getpwall()),
        groups=tuple(GroupEntry(g.gr_name, g.gr_gid, frozenset(g.gr_mem)) for g in grp.getgrall()),
    )


class Action(enum.Enum):
    CREATE_GROUP = "create group"
    CREATE_USER = "create user"
    ADD_MEMBER = "add member"
    REMOVE_MEMBER = "remove member"


@dataclass(frozen=True, slots=True)
class Change:
    """One command that moves the machine towards the desired state."""

    action: Action
    subject: str  # the user or group created, or the user whose membership changes
    group: str | None
    argv: tuple[str, ...]
    why: str

    def __str__(self) -> str:
        return f"{self.action.value} {self.subject}" + (
            f" {'to' if self.action is Action.ADD_MEMBER else 'from'} {self.group}"
            if self.group and self.action in (Action.ADD_MEMBER, Action.REMOVE_MEMBER)
            else ""
        )


@dataclass(frozen=True, slots=True)
class Conflict:
    """Something the plan refuses to touch or cannot do, and why (for the operator)."""

    subject: str
    reason: str


@dataclass(frozen=True, slots=True)
class ProvisioningPlan:
    """The changes to make, what was refused, and the account/group each id maps to."""

    changes: tuple[Change, ...]
    conflicts: tuple[Conflict, ...]
    user_names: Mapping[int, str]
    group_names: Mapping[int, str]


@dataclass(frozen=True, slots=True)
class ProvisioningResult:
    """What was applied (or, in a dry run, would be) and what failed, with the output."""

    plan: ProvisioningPlan
    dry_run: bool
    applied: tuple[Change, ...] = ()
    failed: tuple[tuple[Change, str], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed and not self.plan.conflicts

    @property
    def changed(self) -> bool:
        return bool(self.applied) and not self.dry_run


@dataclass(slots=True)
class _Planner:
    policy: AccountPolicy
    actual: SystemAccounts
    changes: list[Change] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    taken_names: set[str] = field(default_factory=set)  # given out by this plan
    taken_ids: set[int] = field(default_factory=set)
    next_id: int = 0

    def __post_init__(self) -> None:
        self.taken_ids = {u.uid for u in self.actual.users} | {g.gid for g in self.actual.groups}
        self.next_id = self.policy.uid_min

    def free_id(self) -> int | None:
        while self.next_id <= self.policy.uid_max:
            candidate = self.next_id
            self.next_id += 1
            if candidate not in self.taken_ids:
                self.taken_ids.add(candidate)
                return candidate
        return None

    def ours_user(self, entry: PasswdEntry) -> bool:
        return entry.name.startswith(self.policy.user_prefix) and self.policy.owns_id(entry.uid)

    def ours_group(self, entry: GroupEntry) -> bool:
        return entry.name.startswith(self.policy.group_prefix) and self.policy.owns_id(entry.gid)

    def user(self, user: TenantUser) -> str | None:
        """The account name of `user`, planning its creation where it has none."""
        tag = self.policy.gecos(user.user_id)
        # Only our own accounts count: one tagged elsewhere (another gpucenter instance, a
        # test range, a hand-made copy) is never used, so it cannot be a way in either.
        tagged = [u for u in self.actual.users if u.gecos == tag and self.ours_user(u)]
        if len(tagged) > 1:
            names = ", ".join(sorted(u.name for u in tagged))
            self.conflicts.append(Conflict(user.username, f"several accounts claim it: {names}"))
            return None
        if tagged:
            return tagged[0].name
        name = unix_name(self.policy.user_prefix, user.username, user.user_id)
        if not self.available(name):
            name = unix_name(
                self.policy.user_prefix, user.username, user.user_id, force_suffix=True
            )
        if not self.available(name):
            self.conflicts.append(Conflict(user.username, f"{name} is taken by another account"))
            return None
        orphan = self.actual.group(name)  # our primary group, left by an interrupted run
        gid = orphan.gid if orphan is not None else None
        uid = self.free_id()
        if uid is None:
            self.conflicts.append(Conflict(user.username, "the uid range is exhausted"))
            return None
        self.taken_names.add(name)
        if gid is None:
            gid = uid
            self.changes.append(
                Change(
                    Action.CREATE_GROUP,
                    name,
                    name,
                    ("groupadd", "-g", str(gid), name),
                    f"primary group of gpucenter user {user.user_id}",
                )
            )
        home = self.policy.home(name)
        self.changes.append(
            Change(
                Action.CREATE_USER,
                name,
                None,
                (
                    "useradd",
                    "-u",
                    str(uid),
                    "-g",
                    str(gid),
                    "-N",
                    "-M",
                    "-d",
                    str(home) if home is not None else "/nonexistent",
                    "-s",
                    self.policy.shell,
                    "-c",
                    tag,
                    name,
                ),
                f"gpucenter user {user.user_id} ({user.username})",
            )
        )
        return name

    def ours_user_group(self, entry: GroupEntry) -> bool:
        return entry.name.startswith(self.policy.user_prefix) and self.policy.owns_id(entry.gid)

    def available(self, name: str) -> bool:
        """Free for a new account: no user has it and no group but an orphan of ours (a
        primary group whose user an interrupted run never created, reused as is)."""
        if name in self.taken_names or self.actual.user(name) is not None:
            return False
        group = self.actual.group(name)
        return group is None or (
            self.ours_user_group(group) and not any(u.gid == group.gid for u in self.actual.users)
        )

    def group(self, project: TenantProject) -> GroupEntry | None:
        """The project's group as it is (or will be); None when refused."""
        name = unix_name(self.policy.group_prefix, project.name, project.project_id)
        existing = self.actual.group(name)
        if existing is not None:
            if not self.ours_group(existing):
                self.conflicts.append(
                    Conflict(name, f"exists with gid {existing.gid}, outside gpucenter's range")
                )
                return None
            return existing
        if name in self.taken_names or self.actual.user(name) is not None:
            self.conflicts.append(Conflict(name, "the name is taken by a user account"))
            return None
        gid = self.free_id()
        if gid is None:
            self.conflicts.append(Conflict(name, "the gid range is exhausted"))
            return None
        self.taken_names.add(name)
        self.changes.append(
            Change(
                Action.CREATE_GROUP,
                name,
                name,
                ("groupadd", "-g", str(gid), name),
                f"group of project {project.project_id} ({project.name})",
            )
        )
        return GroupEntry(name, gid)

    def membership(self, group: GroupEntry, wanted: set[str], ours: set[str]) -> None:
        for name in sorted(wanted - group.members):
            self.changes.append(
                Change(
                    Action.ADD_MEMBER,
                    name,
                    group.name,
                    ("gpasswd", "-a", name, group.name),
                    "member of the project",
                )
            )
        for name in sorted(group.members - wanted):
            if name not in ours:
                self.conflicts.append(
                    Conflict(group.name, f"member {name} is not a gpucenter account; left in place")
                )
                continue
            self.changes.append(
                Change(
                    Action.REMOVE_MEMBER,
                    name,
                    group.name,
                    ("gpasswd", "-d", name, group.name),
                    "no longer a member of the project",
                )
            )


def plan_provisioning(
    users: Iterable[TenantUser],
    projects: Iterable[TenantProject],
    actual: SystemAccounts,
    policy: AccountPolicy,
) -> ProvisioningPlan:
    """The commands that make `actual` hold `users` and `projects` (pure; nothing runs)."""
    planner = _Planner(policy, actual)
    user_names: dict[int, str] = {}
    for user in sorted(users, key=lambda u: u.user_id):
        name = planner.user(user)
        if name is not None:
            user_names[user.user_id] = name
    ours = {u.name for u in actual.users if planner.ours_user(u)} | set(user_names.values())
    group_names: dict[int, str] = {}
    for project in sorted(projects, key=lambda p: p.project_id):
        group = planner.group(project)
        if group is None:
            continue
        group_names[project.project_id] = group.name
        wanted: set[str] = set()
        for member in sorted(project.member_ids):
            if member in user_names:
                wanted.add(user_names[member])
            else:
                planner.conflicts.append(
                    Conflict(group.name, f"member {member} has no account; not added")
                )
        planner.membership(group, wanted, ours)
    kept = set(group_names.values())
    for stale in sorted(actual.groups, key=lambda g: g.name):
        if planner.ours_group(stale) and stale.name not in kept:
            planner.membership(stale, set(), ours)  # a project gone: its members leave
    order = {action: i for i, action in enumerate(Action)}
    changes = sorted(planner.changes, key=lambda c: order[c.action])  # stable within an action
    return ProvisioningPlan(tuple(changes), tuple(planner.conflicts), user_names, group_names)


CommandRunner = Callable[[Sequence[str]], tuple[int, str]]


def _run(argv: Sequence[str]) -> tuple[int, str]:
    done = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, (done.stdout + done.stderr).strip()


def apply_plan(
    plan: ProvisioningPlan, *, dry_run: bool = False, run: CommandRunner = _run
) -> ProvisioningResult:
    """Run the plan's commands in order; a failed command is reported and the rest still run
    (they are independent, or fail on their own with a clear message)."""
    if dry_run:
        return ProvisioningResult(plan, True, applied=plan.changes)
    applied: list[Change] = []
    failed: list[tuple[Change, str]] = []
    for change in plan.changes:
        returncode, output = run(change.argv)
        if returncode == 0:
            applied.append(change)
        else:
            failed.append((change, f"exit {returncode}: {output}"))
    return ProvisioningResult(plan, False, tuple(applied), tuple(failed))


def provision(
    users: Iterable[TenantUser],
    projects: Iterable[TenantProject],
    policy: AccountPolicy,
    *,
    dry_run: bool = False,
    read: Callable[[], SystemAccounts] = read_system_accounts,
    run: CommandRunner = _run,
) -> ProvisioningResult:
    """Read the machine, plan, apply (needs root unless `dry_run`). The one call to make."""
    return apply_plan(plan_provisioning(users, projects, read(), policy), dry_run=dry_run, run=run)


class IdentityError(LookupError):
    """The job's owner has no usable account (yet): the job must not start."""


def job_identity(
    user: TenantUser,
    project: TenantProject,
    policy: AccountPolicy,
    actual: SystemAccounts | None = None,
) -> RunAs:
    """Who a job of `user` in `project` runs as, checked against the machine as it is now.

    The account must be gpucenter's (tag, prefix, range) and a member of the project's
    gpucenter group; the job gets that one project group as its only supplementary group.
    Raises `IdentityError` otherwise: a job never falls back to another identity.
    """
    actual = read_system_accounts() if actual is None else actual
    tag = policy.gecos(user.user_id)
    accounts = [
        u
        for u in actual.users
        if u.gecos == tag and u.name.startswith(policy.user_prefix) and policy.owns_id(u.uid)
    ]
    if len(accounts) != 1:
        raise IdentityError(
            f"user {user.username!r} (id {user.user_id}) has "
            f"{'no' if not accounts else 'more than one'} gpucenter account; provision first"
        )
    account = accounts[0]
    if not policy.owns_id(account.gid):
        raise IdentityError(f"{account.name}: primary gid {account.gid} is outside the range")
    name = unix_name(policy.group_prefix, project.name, project.project_id)
    group = actual.group(name)
    if group is None or not policy.owns_id(group.gid):
        raise IdentityError(f"project {project.name!r} has no gpucenter group {name}")
    if account.name not in group.members:
        raise IdentityError(f"{account.name} is not a member of {name}")
    return RunAs(account.name, account.uid, account.gid, (group.gid,), policy.home(account.name))


_TAG = re.compile(r"gpucenter user (\d+)")


def owner_identity(
    username: str,
    uid: int | None,
    gid: int | None,
    project: str,
    project_id: int,
    policy: AccountPolicy,
    actual: SystemAccounts | None = None,
) -> RunAs:
    """Who a job runs as, from what its launch request says of the owner (the uid and gid
    gpucenter recorded when it provisioned the account), checked against the machine.

    The recorded ids are not trusted alone: a database restored onto another machine, or one
    that drifted from it, could name someone else's uid. So the account with `uid` must be
    gpucenter's (prefix, range), carry a user tag whose id gives exactly its name for
    `username`, have primary group `gid`, and be a member of the project's group; then
    `job_identity` resolves it from the tag as usual. Raises `IdentityError` otherwise.
    """
    if uid is None or gid is None:
        raise IdentityError(
            f"user {username!r} has no Unix account on this site yet (accounts are made "
            "before jobs start; see the server log if this persists)"
        )
    actual = read_system_accounts() if actual is None else actual
    entry = next((u for u in actual.users if u.uid == uid), None)
    if entry is None or not entry.name.startswith(policy.user_prefix) or not policy.owns_id(uid):
        raise IdentityError(f"uid {uid} recorded for {username!r} is not a gpucenter account here")
    tag = _TAG.fullmatch(entry.gecos)
    if tag is None:
        raise IdentityError(f"account {entry.name} (uid {uid}) carries no gpucenter user tag")
    user_id = int(tag.group(1))
    names = {
        unix_name(policy.user_prefix, username, user_id),
        unix_name(policy.user_prefix, username, user_id, force_suffix=True),
    }
    if entry.name not in names or entry.gid != gid:
        raise IdentityError(
            f"account {entry.name} (uid {uid}, gid {entry.gid}) is not {username!r}'s "
            f"(expected {' or '.join(sorted(names))} with gid {gid}): the database and this "
            "machine disagree"
        )
    run_as = job_identity(
        TenantUser(user_id, username), TenantProject(project_id, project), policy, actual
    )
    if run_as.uid != uid:
        raise IdentityError(f"{username!r} has more than one account here; refused")
    return run_as
