"""Fixtures for the tests against real Slurm daemons (scripts/slurm/setup.sh starts them).

`slurm_cluster` (session) runs setup.sh: a few seconds when Slurm is already up, about half a
minute on a machine without it. Where it cannot run here (not root, no apt-get: exit 2) the
tests skip with the reason; in CI (CI=true) they fail instead, as does any other failure.

Each test gets its own SQLite database, its own top account in Slurm (``gct_<hex>``) and
project names with the same suffix, so runs never see each other's accounts or usage; the
teardown removes the test's accounts from Slurm again and cancels its leftover jobs.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gpucenter.auth.permissions import Caller
from gpucenter.config import Settings
from gpucenter.dispatch.slurm.accounts import (
    SyncCommand,
    apply_sync,
    plan_sync,
    project_account_name,
    read_actual,
)
from gpucenter.dispatch.slurm.cli import SlurmCli
from gpucenter.dispatch.slurm.dispatcher import SlurmDispatcher, read_site
from gpucenter.domain.clock import SystemClock
from gpucenter.domain.cluster import Site
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.db import make_engine, migrate, session_factory
from gpucenter.persistence.tables import JobRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import accounts
from gpucenter.services.identity.signin import caller_for
from gpucenter.services.scheduling.cycle import run_pass
from gpucenter.services.sites.config import LoadedSite
from gpucenter.services.sites.slurm_settings import SlurmSettings
from gpucenter.services.slurm.sync import sync_site
from gpucenter.services.wiring import ensure_site, make_slurm_dispatcher

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "slurm" / "setup.sh"
CONF_B = "/etc/slurm-b/slurm.conf"  # cluster B of scripts/slurm/setup_second.sh
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
USERS = ("gcalice", "gcbob")
SHARED = Path("/tmp/gpucenter-slurm-tests")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slurm: runs against real Slurm daemons")


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI must run the Slurm suite)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """Bring Slurm up (idempotent) and return the cluster's name."""
    if os.geteuid() != 0:
        _unavailable("the Slurm tests need root to install and start Slurm")
    try:
        done = subprocess.run(
            ["bash", str(SETUP)],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            env={**os.environ, "SLURM_READY_TIMEOUT": os.environ.get("SLURM_READY_TIMEOUT", "300")},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"scripts/slurm/setup.sh did not finish: {exc}")
    if done.returncode == 2:
        _unavailable(f"Slurm cannot be set up here: {done.stderr.strip()}")
    if done.returncode != 0:
        pytest.fail(f"scripts/slurm/setup.sh failed ({done.returncode}):\n{done.stderr}")
    # setup.sh waits for each daemon; on a loaded machine they may still be settling.
    wait_for("slurmctld answers", controller_up, 300)
    wait_for("the node takes jobs", node_up, 300)
    for name in USERS:  # jobs run as their gpucenter owner: the Unix user must exist
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(["useradd", "-M", "-s", "/bin/bash", name], check=True)
    from gpucenter.dispatch.slurm.dispatcher import cluster_name

    return cluster_name(SlurmCli())


@pytest.fixture(scope="session")
def second_cluster(slurm_cluster: str) -> str:
    """Cluster B (setup.sh starts it too, by setup_second.sh); its name."""
    from gpucenter.dispatch.base import DispatchError
    from gpucenter.dispatch.slurm.dispatcher import cluster_name

    if not Path(CONF_B).exists():
        _unavailable(f"no second cluster: {CONF_B} is missing (SLURM_SECOND_CLUSTER=0?)")
    try:
        return cluster_name(SlurmCli(slurm_conf=CONF_B))
    except DispatchError as exc:
        pytest.fail(f"the second cluster does not answer: {exc}")


def slurm(*args: str, conf: str | None = None) -> str:
    """Run a Slurm tool (test helper), against cluster B's slurm.conf if given; its stdout."""
    env = {**os.environ, "TZ": "UTC"}
    if conf is not None:
        env["SLURM_CONF"] = conf
    done = subprocess.run(list(args), capture_output=True, text=True, check=True, env=env)
    return done.stdout


@dataclass
class SlurmWorld:
    ctx: AppContext
    settings: SlurmSettings
    cluster: str
    suffix: str
    dispatcher: SlurmDispatcher

    @property
    def top(self) -> str:
        return self.settings.top_account

    def account(self, project: str) -> str:
        """The project's Slurm account (in the test's own namespace)."""
        return project_account_name(project, self.top)

    def plan(self) -> list[SyncCommand]:
        """What the leader's sync would do now (the RawUsage check included)."""
        now = datetime.now(tz=UTC)
        return sync_site(self.ctx.sessions, self.settings, now, apply=False, site="slurm").commands

    def sync(self) -> list[str]:
        return apply_sync(self.settings.cli(), self.plan())

    def caller(self, username: str) -> Caller:
        with self.ctx.sessions() as s:
            return caller_for(s, repo.user_by_name(s, username))


@pytest.fixture
def slurm_world(slurm_cluster: str, tmp_path: Path) -> Iterator[SlurmWorld]:
    suffix = uuid.uuid4().hex[:8]
    SHARED.mkdir(mode=0o1777, exist_ok=True)
    log_dir = SHARED / suffix
    log_dir.mkdir()
    log_dir.chmod(0o711)  # root's: gpucenter makes each owner's directory below it
    url = f"sqlite:///{tmp_path / 'gpucenter.db'}"
    migrate(url)
    settings = Settings(var_dir=tmp_path / "var", database_url=url, scheduler_interval_s=0.2)
    slurm_settings = SlurmSettings(
        top_account=f"gct_{suffix}",
        log_dir=log_dir,
        cluster=slurm_cluster,
        marker_key_file=tmp_path / "var" / "secrets" / "slurm-marker.key",
    )
    engine = make_engine(url)
    sessions = session_factory(engine)
    nodes = read_site(slurm_settings.cli())
    site = LoadedSite(
        Site("slurm", nodes), {n.name: list(range(n.gpu_count)) for n in nodes}, frozenset()
    )
    clock = SystemClock()
    dispatcher = make_slurm_dispatcher(sessions, slurm_settings, clock)
    ctx = AppContext(settings, engine, sessions, site, dispatcher, clock)
    ensure_site(ctx)
    world = SlurmWorld(ctx, slurm_settings, slurm_cluster, suffix, dispatcher)
    now = datetime.now(tz=UTC)
    with sessions.begin() as s:
        accounts.create_organisation(s, f"Alpha University {suffix}", "university", now)
        for name in USERS:
            accounts.create_user(s, name, now, organisation=f"Alpha University {suffix}")
    try:
        yield world
    finally:
        _cleanup(world)
        engine.dispose()


def _cleanup(world: SlurmWorld) -> None:
    """Cancel the test's jobs, wait until Slurm has let go of them (a leftover job holds GPUs
    the next test needs), and remove its accounts (and the users it alone had). Each step
    runs even when an earlier one failed (a test that failed half-way leaves odd states)."""
    cli = world.settings.cli()
    mine: list[str] = []
    try:
        mine = sorted(read_actual(cli, world.cluster, world.top).accounts)
    except Exception as exc:  # slurmdbd down after a failed test: still cancel by name
        print(f"cleanup: cannot read the accounts: {exc}")
    with world.ctx.sessions() as s:
        from gpucenter.persistence.tables import ProjectRow

        mine += [world.account(p.name) for p in s.query(ProjectRow)]
    for account in sorted(set(mine)):
        subprocess.run(["scancel", "-A", account], capture_output=True, check=False)

    def gone() -> bool:
        out = subprocess.run(
            ["squeue", "-h", "-A", ",".join(sorted(set(mine))) or "none", "-o", "%i"],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.returncode != 0 or not out.stdout.strip()

    if mine:
        try:
            wait_for("the test's Slurm jobs are gone", gone, 120)
        except AssertionError as exc:
            print(f"cleanup: {exc}")
    try:
        with world.ctx.sessions.begin() as s:
            from sqlalchemy import delete

            from gpucenter.persistence.tables import MembershipRow

            s.execute(delete(MembershipRow))
        from gpucenter.dispatch.slurm.accounts import SiteState

        commands = plan_sync(
            SiteState(), read_actual(cli, world.cluster, world.top), world.cluster, world.top
        )
        apply_sync(cli, commands, [])
    except Exception as exc:
        print(f"cleanup: removing the accounts failed: {exc}")
    subprocess.run(
        ["sacctmgr", "-i", "delete", "account", f"name={world.top}", f"cluster={world.cluster}"],
        capture_output=True,
        check=False,
    )


def controller_up() -> bool:
    return subprocess.run(["scontrol", "ping"], capture_output=True, check=False).returncode == 0


def node_up() -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
    return out.returncode == 0 and any(
        s.rstrip("*") in ("idle", "mixed", "allocated") for s in out.stdout.split()
    )


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 180.0) -> None:
    """Poll until `predicate` holds. The ceilings are generous: a loaded machine is slow,
    and a test that passes takes only as long as the condition does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout} s")


def project(world: SlurmWorld, name: str, gpu_hours: float, *members: str) -> str:
    project = f"{name}{world.suffix}"
    now = datetime.now(tz=UTC)
    with world.ctx.sessions.begin() as s:
        accounts.create_project(s, project, f"Alpha University {world.suffix}", now)
        for member in members:
            accounts.add_member(s, project, member)
        accounts.create_allocation(s, project, gpu_hours, now - timedelta(minutes=5))
    return project


def job_row(world: SlurmWorld, job_id: int) -> JobRow:
    with world.ctx.sessions() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        s.expunge(row)
        return row


def run_until(
    world: SlurmWorld, job_id: int, done: Callable[[JobRow], bool], timeout: float = 180.0
) -> JobRow:
    """Run scheduling passes until `done` holds for the job's row; that row."""

    def check() -> bool:
        run_pass(world.ctx)
        return bool(done(job_row(world, job_id)))

    try:
        wait_for(f"job {job_id}", check, timeout)
    except AssertionError as exc:
        row = job_row(world, job_id)
        raise AssertionError(
            f"{exc}: {row.state} {row.reason} {row.reason_detail!r} ext={row.external_id}"
        ) from None
    return job_row(world, job_id)


def stop_session_and_see_it_charged(world: SlurmWorld, owner: Caller, job_id: int) -> None:
    """Stop a session as its owner: it ends CANCELLED, and its run is charged like any job's."""
    from sqlalchemy import func, select

    from gpucenter.domain.jobs import JobState
    from gpucenter.persistence.tables import LedgerEntryRow
    from gpucenter.services.sessions import manage as sessions

    sessions.stop(world.ctx, owner, job_id)
    ended = run_until(world, job_id, lambda r: JobState(r.state).is_terminal)
    assert ended.state == JobState.CANCELLED.value, ended.reason_detail

    def charged() -> bool:
        run_until(world, job_id, lambda r: True)
        with world.ctx.sessions() as s:
            total = s.scalar(
                select(func.sum(LedgerEntryRow.gpu_seconds)).where(LedgerEntryRow.job_id == job_id)
            )
        return bool(total and total > 0)

    wait_for("the session's charge", charged, 120)
