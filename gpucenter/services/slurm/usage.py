"""What a Slurm site reports back: job status for the database, and usage for the ledger.

**Job status** (`DatabaseObserver`): the `SlurmDispatcher` tells it when Slurm really started
a job (the job's ``started_at`` becomes Slurm's start time, so that the charge made when the
job ends counts the time it ran, not the time it queued at Slurm) and why Slurm keeps a job
waiting (``reason``/``reason_detail`` carry Slurm's reason, e.g. ``AssocGrpGRESMinutes``,
or ``SiteUnavailable`` while the controller does not answer).

**Usage** (`read_usage`): ``sacct`` over a time window, *allocated* GPUs (``AllocTRES``
``gres/gpu``) x ``ElapsedRaw`` of every ended job; `gpucenter.services.slurm.ingest` charges
it to the ledger.

The observer's writes are the scheduler's (it runs inside the leader's poll), so they are
fenced: a deposed leader's view of a job never overwrites the new leader's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.dispatch.gpuutil import parse_slurm_gpuutil
from gpucenter.dispatch.slurm.cli import SlurmCli, SlurmCommandError, parse_slurm_time
from gpucenter.dispatch.slurm.marker import parse_marker
from gpucenter.dispatch.slurm.states import Phase, map_state
from gpucenter.domain.clock import Instant
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState
from gpucenter.persistence.tables import JobRow
from gpucenter.services.fencing import Fence, fenced

__all__ = ["DatabaseObserver", "UsageRecord", "parse_alloc_tres", "read_usage"]

log = logging.getLogger(__name__)
_REASON_CHARS = 40  # JobRow.reason's width


class DatabaseObserver:
    """Writes what the SlurmDispatcher learns about dispatched jobs into their rows."""

    def __init__(self, sessions: sessionmaker[Session], fence: Fence | None = None) -> None:
        self._sessions = sessions
        self._fence = fence if fence is not None else Fence()

    def recorded(self, job_id: JobId, external_id: str) -> bool | None:
        """Is `external_id` the Slurm job gpucenter recorded for the job? True: release it;
        False: it is not (another start was recorded, or the job ended): cancel it; None:
        not yet known (the job is still pending in gpucenter: its start may yet commit)."""
        with self._sessions() as s:
            row = s.execute(
                select(JobRow.state, JobRow.external_id).where(JobRow.id == int(job_id))
            ).one_or_none()
        if row is None:
            return False
        state, recorded = JobState(row[0]), row[1]
        if state is JobState.RUNNING:
            return bool(recorded == external_id)
        if state is JobState.PENDING:
            return None
        return False

    def started(self, job_id: JobId, at: Instant) -> None:
        with fenced(self._sessions, self._fence) as s:
            s.execute(
                update(JobRow)
                .where(JobRow.id == int(job_id), JobRow.state == JobState.RUNNING.value)
                .values(started_at=datetime.fromtimestamp(at, tz=UTC), reason="", reason_detail="")
            )

    def waiting(self, job_id: JobId, reason: str, detail: str) -> None:
        with fenced(self._sessions, self._fence) as s:
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
        """The gpucenter job the comment names (valid marker or not: see the ingest)."""
        named = parse_marker(self.comment)
        return named.job_id if named is not None else None


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
