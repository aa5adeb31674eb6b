"""The scheduled Slurm usage ingest, against a scripted sacct, on SQLite and PostgreSQL: one
batch per read, idempotent per (cluster, job), a cursor that moves only with the charges and
never past what is not in yet, catch-up after an outage, and the foreign-jobs policy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from gpucenter.dispatch.slurm.cli import Result, SlurmCli, SlurmUnavailable
from gpucenter.domain.jobs import JobState
from gpucenter.persistence.tables import JobRow, LedgerEntryRow
from gpucenter.persistence.tables_ops import UsageCursorRow, UsageFlagRow
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.slurm.ingest import ingest_site
from tests.accounting.conftest import World

NOW = datetime.now(tz=UTC).replace(microsecond=0)
FMT = "%Y-%m-%dT%H:%M:%S"


@dataclass
class FakeSacct:
    """sacct's ended jobs (one line each), sdiag's agent queue, and an outage switch."""

    lines: list[str] = field(default_factory=list)
    queue: int = 0
    down: bool = False
    calls: list[Sequence[str]] = field(default_factory=list)

    def job(self, job_id: int, account: str, gpus: int, elapsed: int, end: datetime, comment=""):  # type: ignore[no-untyped-def]
        self.lines.append(
            f"{job_id}|c1|{account}|alice|COMPLETED|cpu=1,gres/gpu:h100={gpus},gres/gpu={gpus}"
            f"|{elapsed}|{end.strftime(FMT)}|{comment}"
        )

    def __call__(
        self, argv: Sequence[str], stdin: str | None, env: Mapping[str, str], timeout: float
    ) -> Result:
        self.calls.append(argv)
        if argv[0] == "sdiag":
            return Result(0, f"DBD Agent queue size: {self.queue}\n", "")
        if self.down:
            return Result(
                1, "", "sacct: error: Problem talking to the database: Connection refused"
            )
        if "-X" in argv:
            return Result(0, "\n".join(self.lines) + "\n", "")
        return Result(0, "", "")  # the steps' utilisation: none here


def _ingest(world: World, sacct: FakeSacct, at: datetime = NOW, **kw: object):  # type: ignore[no-untyped-def]
    with world.ctx.sessions.begin() as s:
        return ingest_site(s, SlurmCli(runner=sacct), "c1", "gpucenter", at, **kw)  # type: ignore[arg-type]


def _ledger(world: World) -> dict[str, float]:
    with world.ctx.sessions() as s:
        rows = s.execute(select(LedgerEntryRow.source, LedgerEntryRow.gpu_seconds)).all()
    return {src: secs for src, secs in rows if src.startswith("slurm:")}


def _cursor(world: World) -> datetime | None:
    with world.ctx.sessions() as s:
        row = s.get(UsageCursorRow, "slurm:c1")
        return None if row is None else row.position.replace(tzinfo=row.position.tzinfo or UTC)


def test_direct_jobs_are_charged_once_and_the_cursor_follows(world: World) -> None:
    sacct = FakeSacct()
    sacct.job(11, "gpucenter_alpha", 2, 100, NOW - timedelta(minutes=3))
    sacct.job(12, "gpucenter_beta", 1, 50, NOW - timedelta(minutes=2))
    sacct.job(13, "somebody_else", 1, 50, NOW - timedelta(minutes=2))  # no project of ours
    first = _ingest(world, sacct)
    assert sorted(first.charged) == ["11", "12"] and [j for j, _ in first.skipped] == ["13"]
    assert _ledger(world) == {"slurm:c1:11": 200.0, "slurm:c1:12": 50.0}
    assert _cursor(world) == NOW - timedelta(seconds=5)
    again = _ingest(world, sacct, NOW + timedelta(minutes=1))  # overlapping window: no change
    assert again.charged == [] and again.already == 2
    assert _ledger(world) == {"slurm:c1:11": 200.0, "slurm:c1:12": 50.0}


def test_an_outage_moves_nothing_and_the_next_read_catches_up(world: World) -> None:
    sacct = FakeSacct()
    sacct.job(21, "gpucenter_alpha", 1, 60, NOW - timedelta(hours=2))
    _ingest(world, sacct, NOW - timedelta(hours=1))
    before = _cursor(world)
    # sacct (slurmdbd) down while jobs end: the read fails, nothing is written or moved.
    sacct.down = True
    for minutes in range(1, 11):
        sacct.job(30 + minutes, "gpucenter_alpha", 1, 30, NOW - timedelta(minutes=60 - minutes))
        with pytest.raises(SlurmUnavailable):
            _ingest(world, sacct, NOW - timedelta(minutes=60 - minutes))
    assert _cursor(world) == before and len(_ledger(world)) == 1
    sacct.down = False
    caught_up = _ingest(world, sacct)
    assert len(caught_up.charged) == 10
    assert sum(_ledger(world).values()) == 60 + 10 * 30


def test_the_cursor_waits_for_records_still_on_their_way(world: World) -> None:
    """slurmctld still holds records for slurmdbd (it was down): they arrive with old end
    times, so the cursor must not pass them yet; nor a job whose end gpucenter has not
    recorded (its correction is still to come)."""
    sacct = FakeSacct(queue=3)
    sacct.job(41, "gpucenter_alpha", 1, 10, NOW - timedelta(minutes=1))
    _ingest(world, sacct, NOW)
    assert _cursor(world) == NOW - timedelta(days=7)  # the first read's start: not moved
    sacct.queue = 0
    job = jobs.submit(world.ctx, world.centre.alice, JobForm(project="alpha", command="x")).id
    with world.ctx.sessions.begin() as s:
        row = s.get_one(JobRow, job)
        row.state, row.external_id, row.runs = JobState.RUNNING.value, "42", 1
    ended = NOW - timedelta(minutes=30)
    sacct.job(42, "gpucenter_alpha", 1, 10, ended, f"gpucenter:{job}")
    report = _ingest(world, sacct, NOW)
    assert report.deferred == ["42"] and _cursor(world) == ended


def test_a_gpucenter_job_is_corrected_to_slurms_figure(world: World) -> None:
    job = jobs.submit(world.ctx, world.centre.alice, JobForm(project="alpha", command="x")).id
    start = NOW - timedelta(minutes=10)
    with world.ctx.sessions.begin() as s:
        row = s.get_one(JobRow, job)
        row.state, row.external_id, row.runs = JobState.COMPLETED.value, "51", 1
        row.started_at, row.ended_at = start, start + timedelta(seconds=90)
        s.add(
            LedgerEntryRow(
                allocation_id=row.allocation_id,
                job_id=job,
                source=f"job:{job}:run:1",
                gpu_type="h100",
                gpu_seconds=90.0,
                created_at=NOW,
            )
        )
    sacct = FakeSacct()
    sacct.job(51, "gpucenter_alpha", 1, 97, start + timedelta(seconds=97), f"gpucenter:{job}")
    report = _ingest(world, sacct)
    assert report.corrected == ["51"]
    with world.ctx.sessions() as s:
        total = s.scalar(
            select(func.sum(LedgerEntryRow.gpu_seconds)).where(LedgerEntryRow.job_id == job)
        )
    assert total == 97.0  # what sacct says: 1 GPU x 97 s
    assert _ingest(world, sacct).corrected == []


def test_foreign_jobs_are_flagged_where_the_site_says_so(world: World) -> None:
    sacct = FakeSacct()
    sacct.job(61, "gpucenter_alpha", 4, 100, NOW - timedelta(minutes=1))
    report = _ingest(world, sacct, foreign_jobs="flag")
    assert report.flagged == ["61"] and report.charged == []
    assert _ledger(world) == {}
    with world.ctx.sessions() as s:
        flag = s.scalars(select(UsageFlagRow)).one()
    assert (flag.source, flag.gpu_seconds, flag.account) == (
        "slurm:c1:61",
        400.0,
        "gpucenter_alpha",
    )
    assert _ingest(world, sacct, foreign_jobs="flag").flagged == []  # once


def test_outside_jobs_are_charged_and_flagged_once_for_the_pi_and_the_admins(
    world: World,
) -> None:
    """A site with ``outside_submissions: flag``: a job run under a project's account outside
    gpucenter is charged like any usage, listed in usage_flags, audited and told to the
    project's members; a re-read charges and flags nothing again."""
    from gpucenter.persistence.tables_accounting import NotificationRow
    from gpucenter.persistence.tables_audit import AuditEntryRow
    from gpucenter.services.slurm.ingest import OUTSIDE_JOB

    sacct = FakeSacct()
    sacct.job(71, "gpucenter_alpha", 2, 100, NOW - timedelta(minutes=1))
    report = _ingest(world, sacct)
    assert report.charged == ["71"] and report.flagged == ["71"]
    assert _ledger(world) == {"slurm:c1:71": 200.0}
    with world.ctx.sessions() as s:
        flag = s.scalars(select(UsageFlagRow)).one()
        audits = s.scalars(select(AuditEntryRow).where(AuditEntryRow.action == OUTSIDE_JOB)).all()
        notes = s.scalars(
            select(NotificationRow).where(NotificationRow.kind == "slurm_outside_job")
        ).all()
    assert flag.source == "slurm:c1:71" and "charged" in flag.reason
    assert len(audits) == 1 and audits[0].target_type == "project"
    assert world.centre.alice.user_id in {n.user_id for n in notes}
    again = _ingest(world, sacct)
    assert again.charged == [] and again.flagged == [] and _ledger(world) == {"slurm:c1:71": 200.0}


@pytest.mark.parametrize(
    ("comment", "ours"),
    [
        ("right", True),  # a valid marker of run 1 of the job, now in run 2: charged per run
        ("plain", False),  # the old form: anybody can write it
        ("forged", False),  # a MAC made with another key
        ("current", False),  # run 2's marker on another Slurm job: a copy
    ],
)
def test_only_a_valid_earlier_run_marker_counts_as_an_earlier_run(
    world: World, comment: str, ours: bool
) -> None:
    from gpucenter.dispatch.slurm.marker import MarkerKey

    key = MarkerKey(b"s" * 32, "gpucenter")
    job = jobs.submit(world.ctx, world.centre.alice, JobForm(project="alpha", command="x")).id
    with world.ctx.sessions.begin() as s:
        row = s.get_one(JobRow, job)
        row.state, row.external_id, row.runs = JobState.RUNNING.value, "90", 2
    text = {
        "right": key.marker(job, 1),
        "plain": f"gpucenter:{job}",
        "forged": MarkerKey(b"x" * 32, "gpucenter").marker(job, 1),
        "current": key.marker(job, 2),
    }[comment]
    sacct = FakeSacct()
    sacct.job(81, "gpucenter_alpha", 1, 100, NOW - timedelta(minutes=1), text)
    with world.ctx.sessions.begin() as s:
        report = ingest_site(s, SlurmCli(runner=sacct), "c1", "gpucenter", NOW, marker_key=key)
    if ours:
        assert report.already == 1 and _ledger(world) == {}
    else:
        assert report.charged == ["81"] and report.flagged == ["81"]
        assert _ledger(world) == {"slurm:c1:81": 100.0}


@pytest.mark.parametrize(("slurm_id", "ours"), [("81", True), ("82", False)])
def test_a_recorded_earlier_run_is_its_own_slurm_job_and_a_copy_is_outside(
    world: World, slurm_id: str, ours: bool
) -> None:
    """Run 1 of a requeued job was Slurm job 81 (recorded in job_runs at its start). Its valid
    marker on Slurm job 81 is that run (charged per run by the loop); the same marker copied
    by the owner into Slurm job 82 is an outside submission: charged and flagged."""
    from gpucenter.dispatch.slurm.marker import MarkerKey
    from gpucenter.persistence.tables import JobRunRow

    key = MarkerKey(b"s" * 32, "gpucenter")
    job = jobs.submit(world.ctx, world.centre.alice, JobForm(project="alpha", command="x")).id
    with world.ctx.sessions.begin() as s:
        row = s.get_one(JobRow, job)
        row.state, row.external_id, row.runs = JobState.RUNNING.value, "90", 2
        s.add(JobRunRow(job_id=job, run=1, external_id="81", started_at=NOW))
        s.add(JobRunRow(job_id=job, run=2, external_id="90", started_at=NOW))
    sacct = FakeSacct()
    sacct.job(
        int(slurm_id), "gpucenter_alpha", 1, 100, NOW - timedelta(minutes=1), key.marker(job, 1)
    )
    with world.ctx.sessions.begin() as s:
        report = ingest_site(s, SlurmCli(runner=sacct), "c1", "gpucenter", NOW, marker_key=key)
    if ours:
        assert report.already == 1 and _ledger(world) == {}
    else:
        assert report.charged == [slurm_id] and report.flagged == [slurm_id]
        assert _ledger(world) == {f"slurm:c1:{slurm_id}": 100.0}
