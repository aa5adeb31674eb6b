"""What a Slurm site reports back: job status for the database, and usage for the ledger.

**Job status** (`DatabaseObserver`): the `SlurmDispatcher` tells it when Slurm really started
a job (the job's ``started_at`` becomes Slurm's start time, so that the charge made when the
job ends counts the time it ran, not the time it queued at Slurm) and why Slurm keeps a job
waiting (``reason``/``reason_detail`` carry Slurm's reason, e.g. ``AssocGrpGRESMinutes``,
or ``SiteUnavailable`` while the controller does not answer).

**Usage** (`ingest_usage`): ``sacct`` over a time window, charging *allocated* GPUs
(``AllocTRES`` ``gres/gpu``) x ``ElapsedRaw`` for every ended job. Idempotent per (cluster,
Slurm job id): each charge's ledger source is ``slurm:<cluster>:<jobid>`` (unique), so
re-reading a window, or overlapping windows, never charges twice.

- A job gpucenter submitted (``--comment=gpucenter:<id>``) is already charged by the
  scheduler loop when it ends (``job:<id>:run:<n>``). Ingest leaves it alone while gpucenter
  has not recorded its end, and afterwards writes only a correction (Slurm's figure minus
  what was charged) when the two differ by a GPU-second or more. Jobs that ran several
  times (requeued by gpucenter) keep gpucenter's per-run charges.
- A job submitted to Slurm directly (``sbatch -A <project>``) is charged to that project's
  allocation active when it ended (of its GPU type, or a general one).
- Jobs that cannot be matched (an account that is no gpucenter project, no allocation) are
  reported, not charged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.dispatch.gpuutil import parse_slurm_gpuutil
from gpucenter.dispatch.slurm.cli import SlurmCli, SlurmCommandError, parse_slurm_time
from gpucenter.dispatch.slurm.dispatcher import COMMENT_PREFIX
from gpucenter.dispatch.slurm.states import Phase, map_state
from gpucenter.domain.clock import Instant
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import JobRow, LedgerEntryRow, ProjectRow, UserRow
from gpucenter.services.fairshare import add_decayed_usage

__all__ = [
    "DatabaseObserver",
    "IngestReport",
    "UsageRecord",
    "ingest_usage",
    "parse_alloc_tres",
    "read_usage",
]

log = logging.getLogger(__name__)
_REASON_CHARS = 40  # JobRow.reason's width


class DatabaseObserver:
    """Writes what the SlurmDispatcher learns about dispatched jobs into their rows."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def started(self, job_id: JobId, at: Instant) -> None:
        with self._sessions.begin() as s:
            s.execute(
                update(JobRow)
                .where(JobRow.id == int(job_id), JobRow.state == JobState.RUNNING.value)
                .values(started_at=datetime.fromtimestamp(at, tz=UTC), reason="", reason_detail="")
            )

    def waiting(self, job_id: JobId, reason: str, detail: str) -> None:
        with self._sessions.begin() as s:
            s.execute(
                update(JobRow)
                .where(JobRow.id == int(job_id), JobRow.state == JobState.RUNNING.value)
                .values(reason=reason[:_REASON_CHARS], reason_detail=detail)
            )


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One ended Slurm job as sacct reports it."""

    cluster: str
    job_id: str
    account: str
    user: str
    state: str
    gpus: int
    gpu_type: str | None
    elapsed_s: int
    end: datetime | None
    comment: str
    gpu_util_pct: float | None = None  # mean GPU utilisation where the cluster gathers it

    @property
    def gpu_seconds(self) -> float:
        return float(self.gpus * self.elapsed_s)

    @property
    def source(self) -> str:
        return f"slurm:{self.cluster}:{self.job_id}"

    @property
    def gpucenter_job(self) -> int | None:
        rest = self.comment.removeprefix(COMMENT_PREFIX)
        return int(rest) if self.comment.startswith(COMMENT_PREFIX) and rest.isdigit() else None


@dataclass(slots=True)
class IngestReport:
    charged: list[str] = field(default_factory=list)
    corrected: list[str] = field(default_factory=list)
    already: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    gpu_seconds: float = 0.0


def parse_alloc_tres(text: str) -> tuple[int, str | None]:
    """(GPUs, GPU type) from AllocTRES, e.g. ``cpu=1,gres/gpu:h100=2,gres/gpu=2,node=1``."""
    gpus, gpu_type = 0, None
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key == "gres/gpu" and value.isdigit():
            gpus = int(value)
        elif key.startswith("gres/gpu:") and value.isdigit():
            gpu_type = key.removeprefix("gres/gpu:").lower()
            gpus = gpus or int(value)
    return gpus, gpu_type


_FIELDS = ("id", "cluster", "account", "user", "state", "tres", "elapsed", "end", "comment")


def read_usage(cli: SlurmCli, since: datetime, until: datetime) -> list[UsageRecord]:
    """Ended jobs of every user that ran in [since, until), from sacct (allocations only)."""
    fmt = "%Y-%m-%dT%H:%M:%S"
    window = (
        f"--starttime={since.astimezone(UTC).strftime(fmt)}",
        # sacct keeps whole seconds: round the end up so a job ending now is included.
        f"--endtime={(until + timedelta(seconds=1)).astimezone(UTC).strftime(fmt)}",
    )
    rows = cli.parsable(
        "sacct",
        [
            *("-X", "-n", "-P", "-a"),
            *window,
            "--format=JobIDRaw,Cluster,Account,User,State,AllocTRES,ElapsedRaw,End,Comment",
        ],
        _FIELDS,
    )
    util = _read_gpu_utilisation(cli, [*window])
    records: list[UsageRecord] = []
    for r in rows:
        if map_state(r["state"]).phase is not Phase.ENDED:
            continue  # charged once it has ended
        gpus, gpu_type = parse_alloc_tres(r["tres"])
        end = parse_slurm_time(r["end"])
        records.append(
            UsageRecord(
                cluster=r["cluster"],
                job_id=r["id"],
                account=r["account"],
                user=r["user"],
                state=r["state"],
                gpus=gpus,
                gpu_type=gpu_type,
                elapsed_s=int(r["elapsed"]) if r["elapsed"].isdigit() else 0,
                end=datetime.fromtimestamp(end, tz=UTC) if end is not None else None,
                comment=r["comment"],
                gpu_util_pct=util.get(r["id"]),
            )
        )
    return records


def _read_gpu_utilisation(cli: SlurmCli, window: list[str]) -> dict[str, float]:
    """Mean GPU utilisation per job from its steps' TRESUsageInAve (`gres/gpuutil`), for
    clusters that gather it (AccountingStorageTRES with gres/gpuutil and the NVML GPU
    plugin). The busiest step stands for the job. Missing or unreadable: no figure."""
    try:
        rows = cli.parsable(
            "sacct", ["-n", "-P", "-a", *window, "--format=JobIDRaw,TRESUsageInAve"], _UTIL
        )
    except SlurmCommandError as exc:
        log.info("no GPU utilisation from sacct: %s", exc)
        return {}
    found: dict[str, float] = {}
    for r in rows:
        pct = parse_slurm_gpuutil(r["tres"])
        if pct is not None:
            job = r["id"].split(".")[0]
            found[job] = max(pct, found.get(job, 0.0))
    return found


_UTIL = ("id", "tres")


def ingest_usage(
    sessions: sessionmaker[Session], records: Sequence[UsageRecord], now: datetime
) -> IngestReport:
    """Charge what `records` say into the ledger; safe to call again with the same records."""
    report = IngestReport()
    for record in records:
        if record.gpus <= 0 or record.elapsed_s <= 0:
            continue
        try:
            with sessions.begin() as s:
                _ingest_one(s, record, now, report)
        except IntegrityError:  # another ingest wrote the same source meanwhile
            report.already += 1
    return report


def _ingest_one(s: Session, record: UsageRecord, now: datetime, report: IngestReport) -> None:
    if s.scalar(select(LedgerEntryRow.id).where(LedgerEntryRow.source == record.source)):
        report.already += 1
        return
    at = record.end or now
    gpucenter_id = record.gpucenter_job
    job = s.get(JobRow, gpucenter_id) if gpucenter_id is not None else None
    if job is not None and job.external_id == record.job_id:
        if record.gpu_util_pct is not None and JobState(job.state).is_terminal:
            from gpucenter.services.accounting.useit import record_utilisation

            record_utilisation(s, job.id, job.runs or 1, record.gpu_util_pct, 1, "slurm", at)
        _correct(s, job, record, at, report)
        return
    if job is not None and (job.runs or 0) > 1:
        report.already += 1  # an earlier run of a requeued job: charged per run by the loop
        return
    # Otherwise a job submitted to Slurm directly (or a comment that names none of ours).
    project = s.scalar(select(ProjectRow).where(ProjectRow.name == record.account))
    if project is None:
        report.skipped.append((record.job_id, f"account {record.account!r} is no project"))
        return
    allocation = repo.active_allocation(s, project.id, at, record.gpu_type)
    if allocation is None:
        report.skipped.append((record.job_id, f"project {project.name} has no allocation"))
        return
    user_id = s.scalar(select(UserRow.id).where(UserRow.username == record.user))
    _write(s, allocation.id, None, record, record.gpu_seconds, at)
    if user_id is not None:
        add_decayed_usage(s, project.id, user_id, record.gpu_seconds, at)
    report.charged.append(record.job_id)
    report.gpu_seconds += record.gpu_seconds


def _correct(
    s: Session, job: JobRow, record: UsageRecord, at: datetime, report: IngestReport
) -> None:
    """A gpucenter job: charged by the loop at its end; correct to Slurm's figure if needed."""
    if not JobState(job.state).is_terminal:
        report.skipped.append((record.job_id, f"job {job.id}: its end is not recorded yet"))
        return
    if (job.runs or 0) > 1 or job.allocation_id is None:
        report.already += 1
        return
    charged = s.scalar(
        select(func.coalesce(func.sum(LedgerEntryRow.gpu_seconds), 0.0)).where(
            LedgerEntryRow.job_id == job.id
        )
    )
    delta = record.gpu_seconds - float(charged or 0.0)
    if abs(delta) < 1.0:
        report.already += 1
        return
    _write(s, job.allocation_id, job.id, record, delta, at)
    add_decayed_usage(s, job.project_id, job.user_id, delta, at)
    report.corrected.append(record.job_id)
    report.gpu_seconds += delta


def _write(
    s: Session,
    allocation_id: int,
    job_id: int | None,
    record: UsageRecord,
    gpu_seconds: float,
    at: datetime,
) -> None:
    s.add(
        LedgerEntryRow(
            allocation_id=allocation_id,
            job_id=job_id,
            source=record.source,
            gpu_type=record.gpu_type or "gpu",
            gpu_seconds=gpu_seconds,
            created_at=at,
        )
    )
    s.flush()
