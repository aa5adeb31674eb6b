"""A local site with two real tenants, for the hostile-tenant suite (issue 17).

Everything here is real: Unix accounts made by `unix_accounts.provision` (useradd, groupadd,
gpasswd) in a test-only uid range with test-only prefixes, jobs run by bubblewrap and setpriv.
That needs root and bwrap. Without them the tests skip and say why, except with ``CI=true``,
where they fail: CI must run them (as root; scripts/sandbox/setup.sh installs bubblewrap).

GPU device files are stand-ins: character devices with /dev/null's numbers (1:3, mode 0666)
made with mknod in a test directory, and `SandboxPolicy.device_dir` points there. A stand-in
opens like any device, so a job that cannot open another job's "GPU" is refused by the
sandbox (the file is not there), not by permissions.

Accounts are removed at the end (userdel/groupdel of exactly the test prefixes within the
test range); a crashed run can leave some behind: ``getent passwd | grep 'gpucenter user'``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpucenter.dispatch.isolation import (
    AccountPolicy,
    RunAs,
    TenantProject,
    TenantUser,
    job_identity,
    provision,
)
from gpucenter.dispatch.isolation.unix_accounts import read_system_accounts

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_SETUP = Path(__file__).resolve().parents[3] / "scripts" / "sandbox" / "setup.sh"
# Well away from the production default (200000-299999 is the site's; tests take 290000+),
# one block of 100 per test session so that two sessions on one machine do not collide.
TEST_UID_BASE = 290_000


def require(problem: str | None) -> None:
    """Skip with the reason, or fail in CI, which must run these tests."""
    if problem is None:
        return
    if IN_CI:
        pytest.fail(f"{problem} (CI=true: the hostile-tenant suite must run as root with bwrap)")
    pytest.skip(problem)


_PROBLEM: list[str | None] = []


def root_sandbox_problem() -> str | None:
    """Why the real suite cannot run here (None: root, bwrap works); checked once."""
    if not _PROBLEM:
        _PROBLEM.append(_find_problem())
    return _PROBLEM[0]


def _find_problem() -> str | None:
    """Checked with a bare bwrap command, not with the code under test: a broken sandbox
    module must fail these tests, never make them skip as if bwrap were missing."""
    if os.geteuid() != 0:
        return "needs root: switching a job to its owner's identity is real only as root"
    if shutil.which("bwrap") is None and _SETUP.exists():
        subprocess.run(["bash", str(_SETUP)], capture_output=True, timeout=600, check=False)
    bwrap, setpriv = shutil.which("bwrap"), shutil.which("setpriv")
    if bwrap is None or setpriv is None:
        return "bwrap or setpriv is missing (scripts/sandbox/setup.sh installs them)"
    probe = [bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--proc", "/proc", "--dev", "/dev"]
    probe += [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "true"]
    done = subprocess.run(probe, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        return f"bubblewrap cannot run here: {done.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="session")
def as_root_with_bwrap() -> None:
    require(root_sandbox_problem())


@pytest.fixture(scope="session")
def account_policy(tmp_path_factory: pytest.TempPathFactory) -> AccountPolicy:
    tag = secrets.token_hex(2)
    base = TEST_UID_BASE + secrets.randbelow(90) * 100
    homes = tmp_path_factory.mktemp("homes")
    os.chmod(homes, 0o755)
    return AccountPolicy(
        uid_min=base,
        uid_max=base + 99,
        user_prefix=f"t{tag}u-",
        group_prefix=f"t{tag}g-",
        home_root=homes,
    )


def remove_test_accounts(policy: AccountPolicy) -> None:
    """userdel/groupdel exactly the test's own accounts and groups (prefix and range)."""
    actual = read_system_accounts()
    for user in actual.users:
        if user.name.startswith(policy.user_prefix) and policy.owns_id(user.uid):
            subprocess.run(["userdel", user.name], capture_output=True, check=False)
    for group in read_system_accounts().groups:
        ours = group.name.startswith((policy.user_prefix, policy.group_prefix))
        if ours and policy.owns_id(group.gid):
            subprocess.run(["groupdel", group.name], capture_output=True, check=False)


@dataclass(frozen=True)
class Tenant:
    user: TenantUser
    project: TenantProject
    run_as: RunAs


@dataclass(frozen=True)
class TwoTenants:
    policy: AccountPolicy
    a: Tenant
    b: Tenant


@pytest.fixture(scope="session")
def two_tenants(as_root_with_bwrap: None, account_policy: AccountPolicy) -> Iterator[TwoTenants]:
    """Tenants A and B, each with an account, a home (0700) and a project of their own."""
    users = [TenantUser(901, "alice"), TenantUser(902, "bob")]
    projects = [
        TenantProject(801, "proj-a", frozenset({901})),
        TenantProject(802, "proj-b", frozenset({902})),
    ]
    try:
        result = provision(users, projects, account_policy)
        assert result.ok, (result.failed, result.plan.conflicts)
        actual = read_system_accounts()
        tenants = []
        for user, project in zip(users, projects, strict=True):
            run_as = job_identity(user, project, account_policy, actual)
            assert run_as.home is not None
            run_as.home.mkdir(mode=0o700)
            os.chown(run_as.home, run_as.uid, run_as.gid)
            tenants.append(Tenant(user, project, run_as))
        yield TwoTenants(account_policy, tenants[0], tenants[1])
    finally:
        remove_test_accounts(account_policy)


def make_fake_gpus(directory: Path, count: int) -> Path:
    """Stand-in GPU device files (see the module text); refuses a nodev file system."""
    directory.mkdir(mode=0o755)
    for name in [f"nvidia{i}" for i in range(count)] + ["nvidiactl", "nvidia-uvm"]:
        path = directory / name
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(path, 0o666)
    try:
        os.close(os.open(directory / "nvidia0", os.O_RDWR))
    except OSError as exc:
        require(f"stand-in device files do not open here ({exc}); a nodev file system?")
    return directory
