"""A Slurm site's promises with no daemons (a scripted SlurmCli): the sync goes on past a
failing command and a taken name; time limits reserved as Slurm enforces them; a site that
cannot run a job yet keeps it waiting; a held job is released only once recorded; readiness
says which site is down."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gpucenter.app import create_app
from gpucenter.config import Settings
from gpucenter.dispatch.base import JobOwner, SiteNotReady
from gpucenter.dispatch.slurm.accounts import (
    AccountState,
    SiteState,
    SyncFailed,
    apply_sync,
    plan_sync,
)
from gpucenter.dispatch.slurm.cli import Result, SlurmCli
from gpucenter.dispatch.slurm.dispatcher import SlurmDispatcher
from gpucenter.domain.cluster import Node, Site
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState, WaitReason
from gpucenter.persistence.db import make_engine, session_factory
from gpucenter.persistence.tables import JobRow
from gpucenter.services.context import AppContext
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.periodic import site_sync_task
from gpucenter.services.scheduling.cycle import run_pass
from gpucenter.services.sites.config import LoadedSite
from gpucenter.services.sites.health_record import record_site_health
from gpucenter.services.wiring import ensure_site
from tests.dispatch.builders import launch_request
from tests.factories import seed_centre


def _cli(reply: Mapping[str, Result] | None = None, calls: list[list[str]] | None = None):  # type: ignore[no-untyped-def]
    def runner(
        argv: Sequence[str], stdin: str | None, env: Mapping[str, str], timeout: float
    ) -> Result:
        if calls is not None:
            calls.append(list(argv))
        for marker, result in (reply or {}).items():
            if marker in " ".join(argv):
                return result
        return Result(0, "", "")

    return SlurmCli(runner=runner)


def test_one_failing_command_never_stops_the_rest_of_the_sync() -> None:
    desired = SiteState(
        accounts={
            "gpucenter_a": AccountState("gpucenter_direct", 1, 60),
            "gpucenter_b": AccountState("gpucenter_direct", 1, 60),
            "gpucenter_direct": AccountState("gpucenter", 2, None),
        }
    )
    commands = plan_sync(desired, SiteState(), "c1", "gpucenter")
    calls: list[list[str]] = []
    nothing_new = Result(1, "", " Nothing new added.")
    cli = _cli({"account gpucenter_a": nothing_new}, calls)
    failures: list[tuple[str, str]] = []
    done = apply_sync(cli, commands, failures)
    assert [cmd for cmd, _ in failures] == [str(c) for c in commands if "gpucenter_a " in str(c)]
    assert len(done) == len(commands) - 1  # every other command ran
    assert any("gpucenter_b" in " ".join(c) for c in calls)
    with pytest.raises(SyncFailed, match="Nothing new added"):
        apply_sync(cli, commands)  # without a list: raised, after trying them all


def test_a_name_taken_outside_the_tree_is_reported_and_left_alone() -> None:
    desired = SiteState(
        accounts={
            "gpucenter_org_x": AccountState("gpucenter_direct", 2, None),
            "gpucenter_a": AccountState("gpucenter_org_x", 1, 60),
            "gpucenter_b": AccountState("gpucenter_direct", 1, 60),
            "gpucenter_direct": AccountState("gpucenter", 3, None),
        }
    )
    desired.users["ann"].add("gpucenter_a")
    actual = SiteState(has_top=True, elsewhere={"gpucenter_org_x"})
    problems: list[str] = []
    planned = [str(c) for c in plan_sync(desired, actual, "c1", "gpucenter", problems)]
    assert len(problems) == 1 and "gpucenter_org_x" in problems[0]
    assert not any("gpucenter_org_x" in c or "gpucenter_a " in c for c in planned)
    assert any("add account gpucenter_b " in c for c in planned)  # the rest goes on


def test_time_limits_reserved_as_slurm_enforces_them(tmp_path: Path) -> None:
    d = SlurmDispatcher(tmp_path, cli=_cli(), grace_s=32)
    caps = d.capabilities
    assert (caps.time_limit_step_s, caps.time_limit_grace_s) == (60, 32)
    assert caps.enforced_time_limit(90) == 120 + 32  # two whole minutes and the grace
    assert caps.enforced_time_limit(60) == 92
    assert "--time=2" in d.sbatch_args(launch_request(1, time_limit_s=90))


def _world(settings: Settings, dispatcher: SlurmDispatcher) -> AppContext:
    nodes = (Node("n1", "h100", 8, "b1"),)
    site = LoadedSite(Site("slurm", nodes), {"n1": list(range(8))}, frozenset())
    engine = make_engine(settings.effective_database_url)
    ctx = AppContext(settings, engine, session_factory(engine), site, dispatcher)
    ensure_site(ctx)
    return ctx


def test_a_job_the_site_cannot_run_yet_waits_and_asks_for_the_sync(settings: Settings) -> None:
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    refused = Result(
        1,
        "",
        "sbatch: error: Batch job submission failed: Invalid account or account/partition "
        "combination specified",
    )
    ctx = _world(settings, SlurmDispatcher(settings.log_dir, cli=_cli({"sbatch": refused})))
    try:
        centre = seed_centre(ctx)
        form = JobForm(project="alpha", command="true", gpu_type="h100", time_limit_s=90)
        job = jobs.submit(ctx, centre.alice, form).id
        run_pass(ctx)
        with ctx.sessions() as s:
            row = s.get_one(JobRow, job)
        assert row.state == JobState.PENDING.value  # it waits: never FAILED for this
        assert row.reason == WaitReason.SITE_NOT_READY.value
        assert "account is not at the site yet" in row.reason_detail
        assert site_sync_task("slurm") in ctx.wanted_tasks()
        run_pass(ctx)  # held back for a while: not handed to sbatch at every pass
        with ctx.sessions() as s:
            assert s.get_one(JobRow, job).reason == WaitReason.SITE_NOT_READY.value
    finally:
        ctx.engine.dispose()


def test_a_shared_world_writable_log_directory_is_not_ready(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    logs.chmod(0o1777)  # the old shared layout: anybody could plant a name in it
    d = SlurmDispatcher(logs, cli=_cli(), run_as_owner=True)
    with pytest.raises(SiteNotReady, match="writable by nobody else"):
        d.submit(launch_request(3, owner=JobOwner("ann", uid=200_001, gid=300_001)))


def test_an_owner_without_an_account_on_the_host_is_not_ready(tmp_path: Path) -> None:
    d = SlurmDispatcher(tmp_path / "logs", cli=_cli(), run_as_owner=True)
    with pytest.raises(SiteNotReady, match="no Unix account on the server's host"):
        d.submit(launch_request(3, owner=JobOwner("nosuchuser-gc")))


@pytest.mark.skipif(os.geteuid() != 0, reason="makes a directory owned by another uid")
def test_each_owner_gets_a_private_log_directory_made_before_sbatch(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    seen: list[tuple[int, int, int]] = []

    def sbatch(
        argv: Sequence[str], stdin: str | None, env: Mapping[str, str], timeout: float
    ) -> Result:
        home = logs / "ann"
        st = home.stat()  # made before sbatch runs
        seen.append((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)))
        assert f"--output={home}/job-3.out" in argv and f"--chdir={home}" in argv
        return Result(0, "77\n", "")

    d = SlurmDispatcher(logs, cli=SlurmCli(runner=sbatch), run_as_owner=True)
    launched = d.submit(launch_request(3, owner=JobOwner("ann", uid=200_001, gid=300_001)))
    assert seen == [(200_001, 300_001, 0o700)]
    assert stat.S_IMODE(logs.stat().st_mode) == 0o711  # made by the server: nobody lists it
    assert launched.stdout_path == str(logs / "ann" / "job-3.out")
    # The owner's directory replaced by someone else's (or a symlink): the job waits.
    (logs / "ann").rmdir()
    (logs / "ann").symlink_to(tmp_path)
    with pytest.raises(SiteNotReady, match="not a directory of the job's owner"):
        d.submit(launch_request(4, owner=JobOwner("ann", uid=200_001, gid=300_001)))


def test_a_reserved_start_and_its_charge_follow_the_site(settings: Settings) -> None:
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    sbatch = Result(0, "501\n", "")
    ctx = _world(
        settings, SlurmDispatcher(settings.log_dir, cli=_cli({"sbatch": sbatch}), grace_s=32)
    )
    try:
        centre = seed_centre(ctx)
        form = JobForm(project="alpha", command="true", gpu_type="h100", time_limit_s=90)
        job = jobs.submit(ctx, centre.alice, form).id
        run_pass(ctx)
        with ctx.sessions() as s:
            row = s.get_one(JobRow, job)
        assert (row.state, row.reserved_s) == (JobState.RUNNING.value, 152)
    finally:
        ctx.engine.dispose()


class Recording:
    def __init__(self, verdict: bool | None) -> None:
        self.verdict = verdict

    def started(self, job_id: JobId, at: float) -> None: ...

    def waiting(self, job_id: JobId, reason: str, detail: str) -> None: ...

    def recorded(self, job_id: JobId, external_id: str) -> bool | None:
        return self.verdict


@pytest.mark.parametrize(
    ("verdict", "expected"), [(True, "release"), (False, "scancel"), (None, None)]
)
def test_a_held_job_is_released_only_once_its_start_is_recorded(
    tmp_path: Path, verdict: bool | None, expected: str | None
) -> None:
    calls: list[list[str]] = []
    held = Result(0, "501|PENDING|JobHeldAdmin|Unknown|Unknown|gpucenter:1\n", "")
    cli = _cli({"sbatch": Result(0, "501\n", ""), "squeue": held}, calls)
    d = SlurmDispatcher(tmp_path, cli=cli, observer=Recording(verdict), hold_until_recorded=True)
    assert "--hold" in d.sbatch_args(launch_request(1))
    d.submit(launch_request(1))
    d.poll()
    acted = [c for c in calls if "release" in c or c[0] == "scancel"]
    if expected is None:
        assert acted == []  # not recorded yet, nor refused: it stays held
    else:
        assert len(acted) == 1 and expected in " ".join(acted[0])


def test_readiness_names_the_site_that_does_not_answer(settings: Settings) -> None:
    from tests.factories import make_context

    ctx = make_context(settings)
    try:
        (rt,) = ctx.site_runtimes()
        rt.health.failed(ctx.now(), "Unable to contact slurm controller")
        with ctx.sessions.begin() as s:
            record_site_health(s, [rt], ctx.now(), {})
        with TestClient(create_app(ctx, run_scheduler=False)) as client:
            resp = client.get("/readyz")
        assert resp.status_code == 503
        assert "slurm controller" in resp.json()["detail"]
        rt.health.succeeded()
        with ctx.sessions.begin() as s:
            record_site_health(s, [rt], ctx.now(), {})
        with TestClient(create_app(ctx, run_scheduler=False)) as client:
            assert client.get("/readyz").status_code == 200
    finally:
        ctx.dispatcher.shutdown()
        ctx.engine.dispose()
