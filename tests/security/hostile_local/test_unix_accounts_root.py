"""Provisioning real Unix accounts (useradd, groupadd, gpasswd) in a test-only range, as root.

Each test uses its own prefixes and id block (`fresh_policy`) and removes what it made, so
the session's two tenants (conftest) are not disturbed. Accounts a test makes *outside*
gpucenter's range, to stand for an operator's own, are removed by the test itself.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpucenter.dispatch.isolation import (
    AccountPolicy,
    IdentityError,
    SandboxJob,
    SandboxPolicy,
    TenantProject,
    TenantUser,
    job_identity,
    prepare_sandbox,
    provision,
    read_tail,
    shell_command,
    start_sandboxed,
)
from gpucenter.dispatch.isolation.safe_files import make_owned_dir, prepare_job_output
from gpucenter.dispatch.isolation.unix_accounts import read_system_accounts
from tests.security.hostile_local.conftest import TEST_UID_BASE, remove_test_accounts

pytestmark = pytest.mark.usefixtures("as_root_with_bwrap")


@pytest.fixture
def fresh_policy() -> Iterator[AccountPolicy]:
    tag = secrets.token_hex(2)
    base = TEST_UID_BASE + secrets.randbelow(90) * 100
    policy = AccountPolicy(
        uid_min=base, uid_max=base + 99, user_prefix=f"r{tag}u-", group_prefix=f"r{tag}g-"
    )
    try:
        yield policy
    finally:
        remove_test_accounts(policy)


USERS = [TenantUser(11, "alice"), TenantUser(12, "Bob.Kim")]
PROJECTS = [
    TenantProject(21, "vision", frozenset({11, 12})),
    TenantProject(22, "speech", frozenset({12})),
]


def test_provisioning_makes_accounts_and_groups(fresh_policy: AccountPolicy) -> None:
    result = provision(USERS, PROJECTS, fresh_policy)
    assert result.ok and result.changed, (result.failed, result.plan.conflicts)
    alice = pwd.getpwnam(f"{fresh_policy.user_prefix}alice")
    bob = pwd.getpwnam(f"{fresh_policy.user_prefix}bob-kim_12")  # lossy name: id suffix
    for entry, user_id in ((alice, 11), (bob, 12)):
        assert fresh_policy.owns_id(entry.pw_uid)
        assert entry.pw_gid == entry.pw_uid  # a primary group of its own
        assert grp.getgrgid(entry.pw_gid).gr_name == entry.pw_name
        assert entry.pw_gecos == f"gpucenter user {user_id}"
        assert entry.pw_shell == "/usr/sbin/nologin"
    vision = grp.getgrnam(f"{fresh_policy.group_prefix}vision")
    speech = grp.getgrnam(f"{fresh_policy.group_prefix}speech")
    assert sorted(vision.gr_mem) == sorted([alice.pw_name, bob.pw_name])
    assert speech.gr_mem == [bob.pw_name]


def test_a_second_run_changes_nothing(fresh_policy: AccountPolicy) -> None:
    provision(USERS, PROJECTS, fresh_policy)
    again = provision(USERS, PROJECTS, fresh_policy)
    assert again.ok and not again.changed and again.plan.changes == ()


def test_membership_follows_the_project(fresh_policy: AccountPolicy) -> None:
    provision(USERS, PROJECTS, fresh_policy)
    shrunk = [TenantProject(21, "vision", frozenset({11})), PROJECTS[1]]
    result = provision(USERS, shrunk, fresh_policy)
    assert [str(c) for c in result.applied] == [
        f"remove member {fresh_policy.user_prefix}bob-kim_12 from {fresh_policy.group_prefix}vision"
    ]
    assert grp.getgrnam(f"{fresh_policy.group_prefix}vision").gr_mem == [
        f"{fresh_policy.user_prefix}alice"
    ]
    with pytest.raises(IdentityError):
        job_identity(USERS[1], shrunk[0], fresh_policy)
    grown = provision(USERS, PROJECTS, fresh_policy)
    assert [c.action.value for c in grown.applied] == ["add member"]
    assert job_identity(USERS[1], PROJECTS[0], fresh_policy).name.endswith("bob-kim_12")


def test_a_project_gone_loses_its_members_but_keeps_its_gid(fresh_policy: AccountPolicy) -> None:
    provision(USERS, PROJECTS, fresh_policy)
    gid = grp.getgrnam(f"{fresh_policy.group_prefix}speech").gr_gid
    result = provision(USERS, PROJECTS[:1], fresh_policy)
    assert result.ok
    speech = grp.getgrnam(f"{fresh_policy.group_prefix}speech")
    assert speech.gr_mem == [] and speech.gr_gid == gid


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def test_accounts_that_are_not_ours_are_never_touched(fresh_policy: AccountPolicy) -> None:
    """An operator's account with the name gpucenter would pick, and an operator's group with
    a project's group name (both outside the range): the user gets the other name form, the
    project is refused, and neither foreign entry changes."""
    user_name = f"{fresh_policy.user_prefix}carol"
    group_name = f"{fresh_policy.group_prefix}audio"
    _run("useradd", "-r", "-M", "-s", "/usr/sbin/nologin", user_name)
    _run("groupadd", "-r", group_name)
    try:
        foreign_user = pwd.getpwnam(user_name)
        users = [TenantUser(13, "carol")]
        result = provision(users, [TenantProject(23, "audio", frozenset({13}))], fresh_policy)
        assert [c.subject for c in result.plan.conflicts] == [group_name]
        assert grp.getgrnam(group_name).gr_mem == []
        assert pwd.getpwnam(user_name) == foreign_user
        assert result.plan.user_names[13] == f"{user_name}_13"
        assert pwd.getpwnam(f"{user_name}_13").pw_gecos == "gpucenter user 13"
    finally:
        subprocess.run(["userdel", user_name], capture_output=True, check=False)
        subprocess.run(["groupdel", group_name], capture_output=True, check=False)


def test_a_job_gets_only_its_own_project_group(fresh_policy: AccountPolicy, tmp_path: Path) -> None:
    """Bob is in both projects; his "speech" job must not carry the "vision" group (it could
    write vision's shared space otherwise)."""
    provision(USERS, PROJECTS, fresh_policy)
    run_as = job_identity(USERS[1], PROJECTS[1], fresh_policy)
    os.chmod(tmp_path, 0o755)
    workdir = make_owned_dir(tmp_path, "work", uid=run_as.uid, gid=run_as.gid)
    output = prepare_job_output(tmp_path, "out", uid=run_as.uid, gid=run_as.gid)
    job = SandboxJob(1, shell_command("id -G"), workdir, run_as)
    with prepare_sandbox(job, SandboxPolicy()) as prepared:
        process = start_sandboxed(
            prepared, stdout=output.files["stdout"], stderr=output.files["stderr"]
        )
    output.close()
    assert process.wait(timeout=30) == 0
    ids = read_tail(output.path / "stdout", expected_uid=run_as.uid).data.split()
    speech = grp.getgrnam(f"{fresh_policy.group_prefix}speech").gr_gid
    assert sorted(int(i) for i in ids) == sorted({run_as.gid, speech})


def test_an_interrupted_run_is_finished_by_the_next(fresh_policy: AccountPolicy) -> None:
    """useradd failed after groupadd: the next run reuses the orphan group, makes the user."""
    name = f"{fresh_policy.user_prefix}alice"
    _run("groupadd", "-g", str(fresh_policy.uid_min + 50), name)
    result = provision(USERS[:1], [], fresh_policy)
    assert result.ok
    assert pwd.getpwnam(name).pw_gid == fresh_policy.uid_min + 50
    assert [c.action.value for c in result.applied] == ["create user"]
    assert read_system_accounts().user(name) is not None
