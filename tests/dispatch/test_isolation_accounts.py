"""Account provisioning planned against a fake machine: names, collisions, ownership, order.

`FakeMachine` interprets the exact commands the plan emits (groupadd, useradd, gpasswd) on an
in-memory /etc/passwd and /etc/group, refusing what the real tools refuse (a duplicate name or
id, an unknown user), so idempotence and convergence are tested without root.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from gpucenter.dispatch.isolation.unix_accounts import (
    AccountPolicy,
    Action,
    GroupEntry,
    IdentityError,
    PasswdEntry,
    SystemAccounts,
    TenantProject,
    TenantUser,
    apply_plan,
    job_identity,
    plan_provisioning,
    provision,
    unix_name,
)

POLICY = AccountPolicy(uid_min=200_000, uid_max=200_009)
SYSTEM = SystemAccounts(
    users=(PasswdEntry("root", 0, 0, "root"), PasswdEntry("alice", 1000, 1000, "Alice")),
    groups=(GroupEntry("root", 0), GroupEntry("alice", 1000), GroupEntry("video", 44)),
)


class FakeMachine:
    def __init__(self, accounts: SystemAccounts = SYSTEM) -> None:
        self.users = list(accounts.users)
        self.groups = {g.name: g for g in accounts.groups}
        self.commands: list[tuple[str, ...]] = []

    def read(self) -> SystemAccounts:
        return SystemAccounts(tuple(self.users), tuple(self.groups.values()))

    def run(self, argv: Sequence[str]) -> tuple[int, str]:
        self.commands.append(tuple(argv))
        tool, *args = argv
        if tool == "groupadd":
            gid, name = int(args[1]), args[2]
            if name in self.groups or any(g.gid == gid for g in self.groups.values()):
                return 9, f"groupadd: group '{name}' or GID {gid} already exists"
            self.groups[name] = GroupEntry(name, gid)
        elif tool == "useradd":
            opts = dict(zip(args[:-1:2], args[1:-1:2], strict=False))
            uid, gid, name = int(opts["-u"]), int(opts["-g"]), args[-1]
            if any(u.name == name or u.uid == uid for u in self.users):
                return 4, f"useradd: user '{name}' or UID {uid} already exists"
            self.users.append(PasswdEntry(name, uid, gid, opts["-c"]))
        elif tool == "gpasswd":
            flag, user, group = args
            if group not in self.groups or not any(u.name == user for u in self.users):
                return 3, "gpasswd: unknown user or group"
            entry = self.groups[group]
            members = entry.members | {user} if flag == "-a" else entry.members - {user}
            self.groups[group] = replace(entry, members=members)
        else:
            return 127, f"unexpected command {tool}"
        return 0, ""

    def provision(
        self, users: Sequence[TenantUser], projects: Sequence[TenantProject]
    ) -> tuple[int, int]:
        result = provision(users, projects, POLICY, read=self.read, run=self.run)
        assert not result.failed, result.failed
        return len(result.applied), len(result.plan.conflicts)


ALICE, BOB = TenantUser(1, "alice"), TenantUser(2, "Bob Kim")
VISION = TenantProject(10, "vision", frozenset({1, 2}))
SPEECH = TenantProject(11, "speech", frozenset({2}))


@pytest.mark.parametrize(
    ("raw", "key", "expected"),
    [
        ("alice", 1, "gpc-alice"),
        ("alice-2", 1, "gpc-alice-2"),
        ("Alice", 1, "gpc-alice_1"),  # lossy (case): the id makes it unique
        ("alice_2", 7, "gpc-alice-2_7"),  # '_' is never part of a clean name
        ("bob kim", 2, "gpc-bob-kim_2"),
        ("../../etc", 3, "gpc-etc_3"),
        ("김민수", 4, "gpc-x_4"),
        ("", 5, "gpc-x_5"),
        ("a" * 40, 6, "gpc-" + "a" * 26 + "_6"),
        ("a" * 28, 8, "gpc-" + "a" * 28),  # exactly 32 characters: kept
    ],
)
def test_unix_names(raw: str, key: int, expected: str) -> None:
    name = unix_name("gpc-", raw, key)
    assert name == expected
    assert len(name) <= 32


def test_clean_and_suffixed_names_never_collide() -> None:
    """A user named like another's suffixed form cannot take it: clean names have no '_'."""
    lossy = unix_name("gpc-", "ML.X", 5)
    forged = unix_name("gpc-", "ml-x_5", 9)
    assert lossy != forged


def test_first_run_creates_groups_then_users_then_memberships() -> None:
    plan = plan_provisioning([ALICE, BOB], [VISION, SPEECH], SYSTEM, POLICY)
    assert plan.conflicts == ()
    actions = [c.action for c in plan.changes]
    assert actions == sorted(actions, key=list(Action).index)
    assert [str(c) for c in plan.changes] == [
        "create group gpc-alice",
        "create group gpc-bob-kim_2",
        "create group gpcp-vision",
        "create group gpcp-speech",
        "create user gpc-alice",
        "create user gpc-bob-kim_2",
        "add member gpc-alice to gpcp-vision",
        "add member gpc-bob-kim_2 to gpcp-vision",
        "add member gpc-bob-kim_2 to gpcp-speech",
    ]
    useradd = next(c for c in plan.changes if c.action is Action.CREATE_USER)
    assert useradd.argv == (
        "useradd", "-u", "200000", "-g", "200000", "-N", "-M", "-d", "/nonexistent",
        "-s", "/usr/sbin/nologin", "-c", "gpucenter user 1", "gpc-alice",
    )  # fmt: skip


def test_applying_converges_and_a_second_run_does_nothing() -> None:
    machine = FakeMachine()
    assert machine.provision([ALICE, BOB], [VISION, SPEECH]) == (9, 0)
    assert machine.provision([ALICE, BOB], [VISION, SPEECH]) == (0, 0)
    accounts = machine.read()
    for name in ("gpc-alice", "gpc-bob-kim_2"):
        user = accounts.user(name)
        assert user is not None and POLICY.owns_id(user.uid) and user.gid == user.uid


def test_ids_avoid_every_existing_uid_and_gid() -> None:
    taken = SystemAccounts(
        users=(PasswdEntry("x", 200_000, 200_000),), groups=(GroupEntry("y", 200_001),)
    )
    plan = plan_provisioning([ALICE], [], taken, POLICY)
    assert plan.changes[0].argv[:3] == ("groupadd", "-g", "200002")


def test_membership_changes_follow_the_project() -> None:
    machine = FakeMachine()
    machine.provision([ALICE, BOB], [VISION, SPEECH])
    machine.commands.clear()
    machine.provision([ALICE, BOB], [replace(VISION, member_ids=frozenset({1})), SPEECH])
    assert machine.commands == [("gpasswd", "-d", "gpc-bob-kim_2", "gpcp-vision")]


def test_a_renamed_user_keeps_the_account_bound_by_its_tag() -> None:
    machine = FakeMachine()
    machine.provision([ALICE], [])
    plan = plan_provisioning([TenantUser(1, "alice2")], [], machine.read(), POLICY)
    assert plan.changes == () and plan.user_names[1] == "gpc-alice"


def test_a_removed_user_leaves_every_group_but_keeps_its_account() -> None:
    machine = FakeMachine()
    machine.provision([ALICE, BOB], [VISION, SPEECH])
    machine.commands.clear()
    machine.provision([ALICE], [replace(VISION, member_ids=frozenset({1}))])
    assert sorted(machine.commands) == [
        ("gpasswd", "-d", "gpc-bob-kim_2", "gpcp-speech"),  # project gone too
        ("gpasswd", "-d", "gpc-bob-kim_2", "gpcp-vision"),
    ]
    assert machine.read().user("gpc-bob-kim_2") is not None  # its uid is never reused


def test_a_name_taken_by_an_operator_account_gets_the_suffixed_form() -> None:
    operator = replace(SYSTEM, users=(*SYSTEM.users, PasswdEntry("gpc-alice", 1001, 1001)))
    plan = plan_provisioning([ALICE], [], operator, POLICY)
    assert plan.user_names[1] == "gpc-alice_1"
    assert all(c.subject != "gpc-alice" for c in plan.changes)


def test_foreign_group_with_a_project_name_is_refused_and_untouched() -> None:
    operator = replace(SYSTEM, groups=(*SYSTEM.groups, GroupEntry("gpcp-vision", 3000)))
    plan = plan_provisioning([ALICE], [VISION], operator, POLICY)
    assert [c.subject for c in plan.conflicts] == ["gpcp-vision"]
    assert not any(c.group == "gpcp-vision" for c in plan.changes)


def test_foreign_members_of_our_group_are_left_in_place_and_reported() -> None:
    ours = replace(
        SYSTEM, groups=(*SYSTEM.groups, GroupEntry("gpcp-vision", 200_005, frozenset({"alice"})))
    )
    plan = plan_provisioning([], [replace(VISION, member_ids=frozenset())], ours, POLICY)
    assert plan.changes == ()
    assert "not a gpucenter account" in plan.conflicts[0].reason


def test_an_account_tagged_for_the_user_outside_the_range_is_never_used() -> None:
    """Another instance's (or a hand-made) account with the same tag: ours is made anyway,
    and a job never runs as the other one."""
    tagged = PasswdEntry("mallory", 1002, 1002, "gpucenter user 1")
    machine = FakeMachine(replace(SYSTEM, users=(*SYSTEM.users, tagged)))
    machine.provision([ALICE], [replace(VISION, member_ids=frozenset({1}))])
    assert job_identity(ALICE, VISION, POLICY, machine.read()).name == "gpc-alice"


def test_two_accounts_of_ours_with_one_tag_are_a_conflict() -> None:
    twins = (PasswdEntry("gpc-a", 200_001, 200_001, "gpucenter user 1"),) * 2
    plan = plan_provisioning([ALICE], [], replace(SYSTEM, users=twins), POLICY)
    assert plan.user_names == {} and "several accounts" in plan.conflicts[0].reason


def test_an_exhausted_range_is_a_conflict_not_a_crash() -> None:
    small = AccountPolicy(uid_min=200_000, uid_max=200_000)
    plan = plan_provisioning([ALICE, BOB], [], SYSTEM, small)
    assert any("exhausted" in c.reason for c in plan.conflicts)
    assert plan.user_names.keys() == {1}


def test_a_member_without_account_is_reported() -> None:
    plan = plan_provisioning([ALICE], [VISION], SYSTEM, POLICY)
    assert any("member 2 has no account" in c.reason for c in plan.conflicts)


def test_dry_run_runs_nothing() -> None:
    machine = FakeMachine()
    result = provision([ALICE], [VISION], POLICY, dry_run=True, read=machine.read, run=machine.run)
    assert result.dry_run and result.applied and not result.changed
    assert machine.commands == []


def test_failures_are_reported_with_the_tool_output() -> None:
    plan = plan_provisioning([ALICE], [], SYSTEM, POLICY)
    result = apply_plan(plan, run=lambda argv: (1, f"{argv[0]}: permission denied"))
    assert not result.ok and len(result.failed) == len(plan.changes)
    assert "permission denied" in result.failed[0][1]


def test_job_identity_checks_tag_range_and_membership() -> None:
    machine = FakeMachine()
    machine.provision([ALICE, BOB], [VISION, SPEECH])
    accounts = machine.read()
    bob = job_identity(BOB, SPEECH, POLICY, accounts)
    speech = accounts.group("gpcp-speech")
    assert speech is not None and bob.groups == (speech.gid,)
    assert bob.name == "gpc-bob-kim_2" and bob.home is None
    with pytest.raises(IdentityError, match="not a member"):
        job_identity(ALICE, SPEECH, POLICY, accounts)
    with pytest.raises(IdentityError, match="no gpucenter account"):
        job_identity(TenantUser(3, "carol"), VISION, POLICY, accounts)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"uid_min": 500, "uid_max": 600},
        {"uid_min": 60_000, "uid_max": 70_000},  # contains nobody
        {"user_prefix": "Gpc-"},
        {"user_prefix": "gpc"},
        {"user_prefix": "gpc-", "group_prefix": "gpc-p-"},
        {"uid_min": 300, "uid_max": 200},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        AccountPolicy(**kwargs)  # type: ignore[arg-type]


def _provisioned() -> tuple[FakeMachine, SystemAccounts]:
    machine = FakeMachine()
    machine.provision([ALICE, BOB], [TenantProject(7, "alpha", frozenset({1, 2}))])
    return machine, machine.read()


def test_a_launch_request_identity_is_checked_against_the_machine() -> None:
    """`owner_identity` takes the uid/gid gpucenter recorded, and accepts them only for the
    account that really is that user's (its tag and name) and a member of the project."""
    from gpucenter.dispatch.isolation.unix_accounts import owner_identity

    _machine, actual = _provisioned()
    alice = next(u for u in actual.users if u.name == "gpc-alice")
    bob = next(u for u in actual.users if u.gecos == POLICY.gecos(2))
    run_as = owner_identity("alice", alice.uid, alice.gid, "alpha", 7, POLICY, actual)
    assert (run_as.name, run_as.uid, run_as.gid) == ("gpc-alice", alice.uid, alice.gid)
    # The database says alice's uid is bob's (a restored or drifted database): refused.
    with pytest.raises(IdentityError, match="not 'alice'"):
        owner_identity("alice", bob.uid, bob.gid, "alpha", 7, POLICY, actual)
    with pytest.raises(IdentityError, match="gid"):
        owner_identity("alice", alice.uid, bob.gid, "alpha", 7, POLICY, actual)
    with pytest.raises(IdentityError, match="no Unix account"):
        owner_identity("alice", None, None, "alpha", 7, POLICY, actual)
    with pytest.raises(IdentityError, match="not a gpucenter account"):
        owner_identity("alice", 1000, 1000, "alpha", 7, POLICY, actual)  # a person's own
    with pytest.raises(IdentityError, match="no gpucenter group"):
        owner_identity("alice", alice.uid, alice.gid, "beta", 8, POLICY, actual)
