"""The Slurm pieces that need no daemons: state mapping, reasons, sbatch arguments, parsing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.core.model import NodeGpus
from gpucenter.dispatch.base import JobOwner
from gpucenter.dispatch.slurm.accounts import SiteState, plan_sync
from gpucenter.dispatch.slurm.cli import Result, SlurmCli, SlurmUnavailable
from gpucenter.dispatch.slurm.dispatcher import SlurmDispatcher
from gpucenter.dispatch.slurm.marker import MarkerKey
from gpucenter.dispatch.slurm.states import Phase, describe_reason, exit_status, map_state
from gpucenter.domain.cluster import Node, Site
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState
from gpucenter.persistence.db import make_engine, migrate, session_factory
from gpucenter.persistence.tables import AllocationRow, ProjectRow
from gpucenter.services.identity import accounts
from gpucenter.services.slurm.sync import desired_state
from gpucenter.services.slurm.usage import parse_alloc_tres
from tests.dispatch.builders import launch_request

STATES = {
    "PENDING": (Phase.WAITING, None),
    "REQUEUED": (Phase.WAITING, None),
    "RUNNING": (Phase.RUNNING, None),
    "COMPLETING": (Phase.RUNNING, None),
    "SUSPENDED": (Phase.RUNNING, None),
    "COMPLETED": (Phase.ENDED, JobState.COMPLETED),
    "FAILED": (Phase.ENDED, JobState.FAILED),
    "CANCELLED by 0": (Phase.ENDED, JobState.CANCELLED),
    "TIMEOUT": (Phase.ENDED, JobState.TIMEOUT),
    "NODE_FAIL": (Phase.ENDED, JobState.FAILED),
    "PREEMPTED": (Phase.ENDED, JobState.FAILED),
    "OUT_OF_MEMORY": (Phase.ENDED, JobState.FAILED),
    "BOOT_FAIL": (Phase.ENDED, JobState.FAILED),
    "DEADLINE": (Phase.ENDED, JobState.FAILED),
    "SOMETHING_NEW": (Phase.RUNNING, None),  # unknown: never treated as ended
}


@pytest.mark.parametrize("raw", STATES)
def test_every_slurm_state_maps(raw: str) -> None:
    mapped = map_state(raw, "1:0")
    assert (mapped.phase, mapped.state) == STATES[raw]


def test_exit_codes_and_reasons_in_words() -> None:
    assert exit_status("3:0") == 3 and exit_status("0:9") == 137 and exit_status("") is None
    assert "exit code 3" in map_state("FAILED", "3:0").detail
    text = describe_reason("AssocGrpGRESMinutes")
    assert text.startswith("AssocGrpGRESMinutes:") and "GPU-minutes" in text
    assert "GPUs" in describe_reason("Resources")
    assert describe_reason("Weird") == "Slurm reason: Weird"


def test_alloc_tres() -> None:
    assert parse_alloc_tres("billing=1,cpu=1,gres/gpu:h100=2,gres/gpu=2,node=1") == (2, "h100")
    assert parse_alloc_tres("cpu=4,node=1") == (0, None)


def _fake(replies: Mapping[str, Result]) -> SlurmCli:
    def runner(
        argv: Sequence[str], stdin: str | None, env: Mapping[str, str], timeout: float
    ) -> Result:
        return replies[argv[0]]

    return SlurmCli(runner=runner)


def test_sbatch_arguments(tmp_path: Path) -> None:
    key = MarkerKey(b"k" * 32, "gpucenter")
    dispatcher = SlurmDispatcher(
        tmp_path, cli=_fake({}), partition="gpu", run_as_owner=True, marker_key=key
    )
    request = launch_request(
        7,
        "train.py",
        placement=(NodeGpus("n1", (0, 1)),),
        time_limit_s=90,
        workdir="/w",
        owner=JobOwner("ann"),
        project="proj",
        name="t",
    )
    args = dispatcher.sbatch_args(request)
    assert "--account=gpucenter_proj" in args and "--gres=gpu:h100:2" in args
    assert "--time=2" in args and f"--comment={key.marker(7, 1)}" in args and "--chdir=/w" in args
    assert "--partition=gpu" in args and "--uid=ann" in args and "--job-name=t" in args
    assert not any(a.startswith("--qos") for a in args)  # normal: the account's default


def test_controller_down_keeps_jobs_and_says_why(tmp_path: Path) -> None:
    notes: list[tuple[JobId, str]] = []

    class Observer:
        def started(self, job_id: JobId, at: float) -> None: ...

        def waiting(self, job_id: JobId, reason: str, detail: str) -> None:
            notes.append((job_id, reason))

    down = Result(1, "", "squeue: error: Unable to contact slurm controller (connect failure)")
    cli = _fake({"sbatch": Result(0, "42\n", ""), "squeue": down})
    dispatcher = SlurmDispatcher(tmp_path, cli=cli, observer=Observer())
    request = launch_request(1, placement=(NodeGpus("n1", (0,)),), project="p")
    assert dispatcher.submit(request).external_id == "42"
    assert dispatcher.poll() == []
    assert notes == [(JobId(1), "SiteUnavailable")] and dispatcher.unavailable
    assert dispatcher.running_job_ids() == {JobId(1)}
    with pytest.raises(SlurmUnavailable):
        cli.run("squeue", [])


# ------------------------------------------------- account tree: programmes, QOS, holds
def _centre(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'gpucenter.db'}"
    migrate(url)
    return session_factory(make_engine(url))


def test_programme_level_qos_and_holds_in_the_desired_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpucenter.persistence.tables_accounting import BudgetPolicyRow
    from gpucenter.persistence.tables_allocation import ProgrammeRow
    from gpucenter.services import allocations

    sessions = _centre(tmp_path)
    now = datetime.now(tz=UTC)
    with sessions.begin() as s:
        accounts.create_organisation(s, "Uni", "university", now)
        for name in ("held", "opp", "fine", "plain"):
            accounts.create_project(s, name, "Uni", now)
        s.add_all(
            [
                ProgrammeRow(id=1, name="AI Seed", owner="MSIT", created_at=now),
                ProgrammeRow(id=2, name="SME Boost", owner="MSS", created_at=now),
                BudgetPolicyRow(programme_id=2, on_exhausted="opportunistic", updated_at=now),
            ]
        )
        for name, hours in (("held", 10.0), ("opp", 20.0), ("fine", 30.0), ("plain", 5.0)):
            accounts.create_allocation(s, name, hours, now - timedelta(minutes=1))
        s.flush()
        for alloc in s.scalars(select(AllocationRow)):
            project = s.get_one(ProjectRow, alloc.project_id).name
            if project in ("held", "opp"):
                alloc.state = "exhausted"
    programme_of = {"held": 1, "fine": 1, "opp": 2}

    def fake_programmes(s: Session, allocs: list[AllocationRow]) -> dict[int, int | None]:
        return {a.id: programme_of.get(s.get_one(ProjectRow, a.project_id).name) for a in allocs}

    monkeypatch.setattr(allocations, "programme_ids", fake_programmes)
    with sessions() as s:
        state = desired_state(s, "gpucenter", now)
    acc = {k.removeprefix("gpucenter_"): v for k, v in state.accounts.items()}
    assert all(k.startswith("gpucenter_") for k in state.accounts)  # gpucenter's namespace
    assert acc["prg_ai_seed"].parent == "gpucenter" and acc["prg_ai_seed"].fairshare == 40
    assert acc["org_uni_ai_seed"].parent == "gpucenter_prg_ai_seed"
    assert acc["held"].parent == acc["fine"].parent == "gpucenter_org_uni_ai_seed"
    assert acc["opp"].parent == "gpucenter_org_uni_sme_boost"
    assert acc["plain"].parent == "gpucenter_org_uni"
    assert acc["org_uni"].parent == "gpucenter_direct"
    assert (acc["fine"].qos, acc["fine"].default_qos, acc["fine"].held) == (
        "normal,opportunistic",
        "normal",
        False,
    )
    assert acc["held"].held and not acc["opp"].held
    assert (acc["opp"].qos, acc["opp"].default_qos) == ("opportunistic", "opportunistic")

    # Against a site that has the tree but not the hold: exactly the hold is planned.
    actual = SiteState(accounts={k: replace(v, held=False) for k, v in state.accounts.items()})
    plan = [str(c) for c in plan_sync(state, actual, "c1", "gpucenter")]
    assert plan == [
        "sacctmgr -i modify account where name=gpucenter_held cluster=c1 set GrpSubmitJobs=0 "
        "GrpJobs=0"
    ]


def test_a_failing_sync_is_logged_and_the_loop_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from gpucenter.config import Settings
    from gpucenter.services.context import AppContext
    from gpucenter.services.periodic import PeriodicRunner
    from gpucenter.services.scheduling.loop import SchedulerLoop
    from gpucenter.services.sites.config import LoadedSite
    from gpucenter.services.sites.runtime import SiteRuntime
    from gpucenter.services.sites.slurm_settings import SlurmSettings

    down = Result(1, "", "sacctmgr: error: Problem talking to the database: Connection refused")
    cli_settings = SlurmSettings(cluster="c1", _env_prefix="NONE_")  # type: ignore[call-arg]
    url = f"sqlite:///{tmp_path / 'gpucenter.db'}"
    migrate(url)
    engine = make_engine(url)
    site = LoadedSite(Site("s", (Node("n", "h100", 1),)), {"n": [0]}, frozenset())
    dispatcher = SlurmDispatcher(tmp_path, cli=_fake({}))
    settings = Settings(var_dir=tmp_path, database_url=url, slurm_sync_interval_s=60)
    runtime = SiteRuntime("s", site, dispatcher, settings=cli_settings)
    ctx = AppContext(settings, engine, session_factory(engine), site, dispatcher, sites=[runtime])
    calls: list[str] = []

    def failing_cli() -> SlurmCli:
        calls.append("sync")
        return _fake({"sacctmgr": down})

    object.__setattr__(cli_settings, "cli", failing_cli)
    loop = SchedulerLoop(ctx, 1.0, lock=object())  # type: ignore[arg-type]
    runner = loop.periodic
    assert [t.name for t in runner.tasks if t.name.endswith(":s")] == [
        "site-sync:s",
        "slurm-usage:s",
    ]
    at = datetime(2026, 11, 1, 10, tzinfo=UTC)
    sync_only = PeriodicRunner([t for t in runner.tasks if t.name == "site-sync:s"])
    assert sync_only.run_due(ctx, at) == 1
    assert "periodic task site-sync:s failed" in caplog.text
    assert sync_only.run_due(ctx, at + timedelta(seconds=30)) == 0 and calls == ["sync"]
    sync_only.run_due(ctx, at + timedelta(seconds=61))  # retried after a minute
    assert calls == ["sync", "sync"]
    sync_only.request("site-sync:s")  # a job found its account missing: sync now
    sync_only.run_due(ctx, at + timedelta(seconds=70))
    assert calls == ["sync", "sync", "sync"]


def test_gpu_utilisation_comes_from_the_busiest_step_where_the_cluster_gathers_it() -> None:
    """sacct as a cluster with gres/gpuutil gathering prints it (the test clusters have fake
    GPUs and no NVML plugin, so this path is checked against recorded output)."""
    from gpucenter.services.slurm.usage import read_usage

    allocations = (
        "41|alpha|proj|ana|COMPLETED|cpu=2,gres/gpu:h100=2,gres/gpu=2,node=1|600|"
        "2026-11-01T10:10:00|gpucenter:7\n"
        "42|alpha|proj|ana|COMPLETED|cpu=1,gres/gpu:h100=1,gres/gpu=1,node=1|60|"
        "2026-11-01T10:02:00|\n"
    )
    steps = (
        "41|\n41.batch|cpu=00:00:10,gres/gpumem=1000M,gres/gpuutil=35,mem=1G\n"
        "41.0|cpu=00:09:00,gres/gpuutil=82.5,mem=4G\n"
        "42|\n42.batch|cpu=00:00:10,mem=1G\n"
    )

    def runner(argv, stdin, env, timeout):  # type: ignore[no-untyped-def]
        if argv[0].endswith("sacct") and "-X" in argv:
            return Result(0, allocations, "")
        if argv[0].endswith("sacct"):
            return Result(0, steps, "")
        raise AssertionError(argv)

    now = datetime(2026, 11, 1, 11, tzinfo=UTC)
    records = read_usage(SlurmCli(runner=runner), now - timedelta(hours=2), now)
    by_id = {r.job_id: r for r in records}
    assert by_id["41"].gpu_util_pct == 82.5 and by_id["41"].gpu_seconds == 1200
    assert by_id["42"].gpu_util_pct is None


def test_no_utilisation_figure_when_sacct_refuses_the_step_query() -> None:
    from gpucenter.services.slurm.usage import read_usage

    def runner(argv, stdin, env, timeout):  # type: ignore[no-untyped-def]
        if "-X" in argv:
            return Result(0, "43|alpha|proj|ana|COMPLETED|gres/gpu=1|60|2026-11-01T10:02:00|\n", "")
        return Result(1, "", "sacct: error: Invalid field requested: TRESUsageInAve")

    now = datetime(2026, 11, 1, 11, tzinfo=UTC)
    (record,) = read_usage(SlurmCli(runner=runner), now - timedelta(hours=2), now)
    assert record.gpu_util_pct is None and record.gpu_seconds == 60
