"""Jobs through gpucenter onto a real Slurm cluster: account, GPUs, state, logs, one charge,
and Slurm's pending reason shown to the user."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from gpucenter.domain.jobs import JobState
from gpucenter.persistence.tables import LedgerEntryRow
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.slurm.ingest import IngestReport, ingest_records
from gpucenter.services.slurm.usage import read_usage
from tests.slurm.conftest import SlurmWorld, slurm, wait_for
from tests.slurm.conftest import project as _project
from tests.slurm.conftest import run_until as _run_until


def _sacct(job: str, fields: str) -> list[str]:
    return slurm("sacct", "-X", "-n", "-P", "-j", job, f"--format={fields}").strip().split("|")


def _ledger(world: SlurmWorld) -> list[tuple[str, float, int | None]]:
    with world.ctx.sessions() as s:
        rows = s.execute(
            select(LedgerEntryRow.source, LedgerEntryRow.gpu_seconds, LedgerEntryRow.job_id)
        ).all()
    return sorted((src, secs, job) for src, secs, job in rows)


def test_job_runs_under_slurm_with_its_account_gpus_logs_and_one_charge(
    slurm_world: SlurmWorld,
) -> None:
    world = slurm_world
    project = _project(world, "p", 100.0, "gcalice")
    assert world.sync(), "the first sync creates the accounts"
    form = JobForm(
        project=project,
        command='echo "gpus=$CUDA_VISIBLE_DEVICES user=$(id -un) job=$GPUCENTER_JOB_ID"; '
        "echo to-stderr >&2; sleep 2",
        gpus_per_node=2,
        gpu_type="h100",
        time_limit_s=120,
        name="hello",
    )
    job_id = jobs.submit(world.ctx, world.caller("gcalice"), form).id

    row = _run_until(world, job_id, lambda r: JobState(r.state).is_terminal)

    assert row.state == JobState.COMPLETED.value, row.reason_detail
    assert row.external_id and row.external_id.isdigit()
    ended = row.external_id
    # slurmdbd learns of the end (and, oddly, the job name) a moment after slurmctld.
    wait_for("sacct has the job's end", lambda: _sacct(ended, "JobName")[0] == "hello", 120)
    account, user, tres, elapsed, comment, name = _sacct(
        row.external_id, "Account,User,AllocTRES,ElapsedRaw,Comment,JobName"
    )
    marker = world.settings.marker_key().marker(job_id, 1)  # the per-run marker
    expected = (world.account(project), "gcalice", marker, "hello")
    assert (account, user, comment, name) == expected
    assert "gres/gpu=2" in tres and "gres/gpu:h100=2" in tres
    assert row.stdout_path and row.stderr_path
    with open(row.stdout_path) as out:
        stdout = out.read()
    assert f"user=gcalice job={job_id}" in stdout
    assert len(stdout.split("gpus=")[1].split()[0].split(",")) == 2  # two GPUs visible
    with open(row.stderr_path) as err:
        assert "to-stderr" in err.read()

    # Charged once, from Slurm's own start and end: 2 GPUs x the seconds Slurm ran it.
    charges = _ledger(world)
    assert charges == [(f"job:{job_id}:run:1", 2.0 * int(elapsed), job_id)]
    now = datetime.now(tz=UTC)
    for _ in range(2):  # re-reading the window (twice) never charges again
        usage = read_usage(world.settings.cli(), now - timedelta(hours=1), now)
        with world.ctx.sessions.begin() as s:
            report = ingest_records(s, usage, now, top=world.top)
        assert report.corrected == [] and report.charged == []
    assert _ledger(world) == charges

    # A job submitted to Slurm directly, outside gpucenter, is charged by the ingest, once.
    out = slurm(
        *("sbatch", "--parsable", "--wait", f"--account={world.account(project)}"),
        "--uid=gcalice",
        *("--gres=gpu:h100:1", "--time=1", "--output=/dev/null"),
        *("--wrap", "sleep 1"),
    )
    direct = out.strip().split(";")[0]
    wait_for("sacct has the direct job", lambda: _sacct(direct, "End")[0] not in ("", "Unknown"))
    (direct_elapsed,) = _sacct(direct, "ElapsedRaw")

    def ingest() -> IngestReport:
        now = datetime.now(tz=UTC)
        usage = read_usage(world.settings.cli(), now - timedelta(hours=1), now)
        with world.ctx.sessions.begin() as s:
            return ingest_records(s, usage, now, top=world.top)

    # The ingest reads overlapping windows (a job shows in a window read a moment after its
    # end is in sacct): it is charged by the first read that sees it, and never again.
    reports: list[IngestReport] = []

    def charged_yet() -> bool:
        reports.append(ingest())
        return any(r.charged for r in reports)

    wait_for("a window read sees the job", charged_yet, 120)
    assert [job for r in reports for job in r.charged] == [direct]
    again = ingest()
    assert again.charged == [] and again.corrected == [] and again.already >= 2
    source = f"slurm:{world.cluster}:{direct}"
    assert (source, 1.0 * int(direct_elapsed), None) in _ledger(world)
    assert len(_ledger(world)) == 2


def test_over_limit_job_waits_with_slurms_reason_and_runs_once_topped_up(
    slurm_world: SlurmWorld,
) -> None:
    world = slurm_world
    project = _project(world, "q", 10.0, "gcbob")
    world.sync()
    # Slurm believes the account has 1 GPU-minute (as if used up at the site); gpucenter's
    # core still admits the job: Slurm's limit is what stops it.
    subprocess.run(
        [
            *("sacctmgr", "-i", "modify", "account", "where", f"name={world.account(project)}"),
            *(f"cluster={world.cluster}", "set", "GrpTRESMins=gres/gpu=1"),
        ],
        check=True,
        capture_output=True,
    )
    form = JobForm(
        project=project, command="true", gpus_per_node=2, gpu_type="h100", time_limit_s=300
    )
    job_id = jobs.submit(world.ctx, world.caller("gcbob"), form).id

    row = _run_until(world, job_id, lambda r: r.reason == "AssocGrpGRESMinutes", timeout=180)

    assert row.state == JobState.RUNNING.value  # handed to Slurm, waiting in its queue
    assert "AssocGrpGRESMinutes" in row.reason_detail
    assert "GPU-minutes" in row.reason_detail, row.reason_detail
    assert slurm("squeue", "-h", "-j", row.external_id or "", "-o", "%T").strip() == "PENDING"

    # The sync puts the limit back to the allocation's 600 GPU-minutes; Slurm starts the job.
    plan = [str(c) for c in world.plan()]
    assert plan == [
        f"sacctmgr -i modify account where name={world.account(project)} "
        f"cluster={world.cluster} set GrpTRESMins=gres/gpu=600"
    ]
    world.sync()
    row = _run_until(world, job_id, lambda r: JobState(r.state).is_terminal, timeout=300)
    assert row.state == JobState.COMPLETED.value, row.reason_detail
    with world.ctx.sessions() as s:
        total = s.scalar(
            select(func.count()).select_from(LedgerEntryRow).where(LedgerEntryRow.job_id == job_id)
        )
    assert total == 1
