"""Slurm usage into the ledger: batched, idempotent, resumable, on the leader's schedule.

`ingest_site` is what the scheduler leader runs every ``usage_ingest_interval_s`` for each
Slurm site (and ``gpucenter slurm usage`` by hand). It reads ``sacct`` from the site's
*cursor* (`usage_cursors`, one per cluster) and charges every ended job in one transaction
through the ledger's batched path (COPY and one INSERT ... ON CONFLICT DO NOTHING on
PostgreSQL), together with the fair-share usage, the flags and the new cursor:

- **Idempotent per (cluster, Slurm job).** A charge's source is ``slurm:<cluster>:<jobid>``
  for the job's allocation (``sacct -X``: its steps run inside it and are not charged again),
  unique in the ledger, so windows that overlap, or an ingest repeated after its answer was
  lost, never charge twice.
- **Never lost.** The cursor moves only in the transaction that wrote the charges, never past
  a job whose end gpucenter has not recorded yet (its correction is still to come), and only
  once slurmctld's queue of records for slurmdbd is empty (``sdiag``: jobs that ended while
  slurmdbd was down reach it late, with their old end times). Each read also goes back
  `OVERLAP_S` before the cursor. While ``sacct`` or the database is down the task fails and
  is retried; the cursor has not moved, so the next run catches up on the whole outage.
- **Jobs gpucenter submitted** are the Slurm job ids gpucenter recorded for its jobs (never
  the comment alone: any user can write any comment). The loop charges them when they end;
  the ingest writes only the difference to Slurm's own figure (allocated GPUs x ElapsedRaw),
  so that the ledger equals ``sacct`` job by job. An earlier run of a requeued job (charged
  per run by the loop) is recognised by a valid marker (`dispatch.slurm.marker`) of an
  earlier run, as the job's owner, under its project's account.
- **Jobs run under a project's account outside gpucenter** (``sbatch -A``, a forged or
  copied marker: what a site with ``outside_submissions: flag`` lets run, and what a missing
  submit rule lets through at a ``refuse`` site) are charged to the project's allocation like
  any usage and *flagged*: a row in `usage_flags` (the operator's list), an audit entry
  (``slurm.outside_job``) for the centre's admins and a notification to the project's
  members (its PI among them). Where the site says ``foreign_jobs: flag`` they are flagged
  and not charged. The flag's source is the charge's, so a re-read never charges or flags
  twice.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gpucenter.dispatch.slurm.accounts import project_account_name
from gpucenter.dispatch.slurm.cli import SlurmCli
from gpucenter.dispatch.slurm.marker import MarkerKey
from gpucenter.domain.clock import as_utc
from gpucenter.domain.jobs import JobState
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import (
    JobRow,
    JobRunRow,
    LedgerEntryRow,
    ProjectRow,
    UserRow,
)
from gpucenter.persistence.tables_ops import UsageCursorRow, UsageFlagRow
from gpucenter.services.accounting.ledger import UsageCharge, ingest_usage
from gpucenter.services.fairshare import add_decayed_usage
from gpucenter.services.slurm.usage import UsageRecord, read_usage

__all__ = [
    "OUTSIDE_JOB",
    "OVERLAP_S",
    "IngestReport",
    "agent_queue_empty",
    "ingest_records",
    "ingest_site",
]

log = logging.getLogger(__name__)
OVERLAP_S = 600.0
"""Each read starts this long before the cursor (records that reached slurmdbd late)."""
OUTSIDE_JOB = "slurm.outside_job"
"""The audit action of a job found run under a project's account outside gpucenter."""
SETTLE_S = 5.0
"""The cursor stays this far behind the time of the read (sacct keeps whole seconds)."""


@dataclass(slots=True)
class IngestReport:
    charged: list[str] = field(default_factory=list)
    corrected: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    already: int = 0
    deferred: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    gpu_seconds: float = 0.0
    read_from: datetime | None = None
    cursor: datetime | None = None

    def summary(self) -> str:
        return (
            f"charged {len(self.charged)}, corrected {len(self.corrected)}, flagged "
            f"{len(self.flagged)}, {self.already} already in, {len(self.deferred)} deferred, "
            f"{len(self.skipped)} not ours; {self.gpu_seconds / 3600:.3f} GPU-hours; cursor "
            f"{self.cursor:%Y-%m-%dT%H:%M:%SZ}"
            if self.cursor
            else "no cursor"
        )


_AGENT_QUEUE = re.compile(r"DBD Agent queue size:\s*(\d+)")


def agent_queue_empty(cli: SlurmCli) -> bool:
    """slurmctld has no job records waiting for slurmdbd (``sdiag``); False when unknown."""
    try:
        out = cli.run("sdiag", [])
    except Exception:  # any failure: not known to be settled, so the cursor waits
        return False
    match = _AGENT_QUEUE.search(out)
    return match is not None and int(match.group(1)) == 0


def ingest_site(
    s: Session,
    cli: SlurmCli,
    cluster: str,
    top: str,
    now: datetime,
    *,
    foreign_jobs: str = "charge",
    first_lookback_s: float = 7 * 86400.0,
    marker_key: MarkerKey | None = None,
) -> IngestReport:
    """Read the site's usage from its cursor and charge it, all in `s`'s transaction (the
    caller commits; the scheduler's is fenced). Raises while sacct does not answer."""
    source = f"slurm:{cluster}"
    cursor = s.get(UsageCursorRow, source, with_for_update=True)
    position = (
        as_utc(cursor.position) if cursor is not None else now - timedelta(seconds=first_lookback_s)
    )
    since = position - timedelta(seconds=OVERLAP_S)
    records = [r for r in read_usage(cli, since, now) if r.cluster in ("", cluster)]
    settled = agent_queue_empty(cli)
    report = ingest_records(
        s, records, now, top=top, foreign_jobs=foreign_jobs, marker_key=marker_key
    )
    report.read_from = since
    new_position = position
    if settled:
        new_position = max(position, now - timedelta(seconds=SETTLE_S))
        late = [r.end for r in records if r.job_id in set(report.deferred) and r.end]
        if late:
            new_position = max(position, min(new_position, *late))
    if cursor is None:
        s.add(UsageCursorRow(source=source, position=new_position, updated_at=now))
    else:
        cursor.position, cursor.updated_at = new_position, now
    report.cursor = new_position
    return report


@dataclass(slots=True)
class _Plan:
    charges: list[UsageCharge] = field(default_factory=list)
    usage: dict[tuple[int, int], float] = field(default_factory=lambda: defaultdict(float))
    flags: list[UsageFlagRow] = field(default_factory=list)
    utilisation: list[tuple[int, int, float, datetime]] = field(default_factory=list)
    outside: list[tuple[ProjectRow, UsageRecord, bool]] = field(default_factory=list)


def ingest_records(
    s: Session,
    records: Sequence[UsageRecord],
    now: datetime,
    *,
    top: str = "gpucenter",
    foreign_jobs: str = "charge",
    marker_key: MarkerKey | None = None,
) -> IngestReport:
    """Charge what `records` say, in one batch; safe to call again with the same records.
    Without `marker_key` (older callers) any comment naming a requeued job counts as one of
    its earlier runs."""
    report = IngestReport()
    wanted = [r for r in records if r.gpus > 0 and r.elapsed_s > 0]
    present = _present_sources(s, [r.source for r in wanted])
    todo = [r for r in wanted if r.source not in present]
    report.already += len(wanted) - len(todo)
    jobs = _jobs(s, [r.gpucenter_job for r in todo if r.gpucenter_job is not None])
    charged = _charged_per_job(s, [j.id for j in jobs.values()])
    run_ids = _run_ids(s, [j.id for j in jobs.values() if (j.runs or 0) > 1])
    projects = _projects_by_account(s, top)
    users = dict(s.execute(select(UserRow.username, UserRow.id)).tuples().all())
    plan = _Plan()
    for record in todo:
        at = record.end or now
        job = jobs.get(record.gpucenter_job) if record.gpucenter_job is not None else None
        if job is not None and job.external_id == record.job_id:
            _correct(job, record, at, charged.get(job.id, 0.0), plan, report)
        elif job is not None and _earlier_run(
            job, record, marker_key, projects, users, run_ids.get(job.id)
        ):
            report.already += 1  # an earlier run of a requeued job: charged per run
        else:
            _foreign(s, record, at, projects, users, foreign_jobs, plan, report, now)
    if plan.charges:
        ingest_usage(s, plan.charges)
    for (project_id, user_id), gpu_seconds in plan.usage.items():
        add_decayed_usage(s, project_id, user_id, gpu_seconds, now)
    for flag in plan.flags:
        s.add(flag)
    if plan.outside:
        s.flush()
        _tell_outside(s, plan.outside, now)
    if plan.utilisation:
        from gpucenter.services.accounting.useit import record_utilisation

        for job_id, run, pct, at in plan.utilisation:
            record_utilisation(s, job_id, run, pct, 1, "slurm", at)
    s.flush()
    return report


def _correct(
    job: JobRow,
    record: UsageRecord,
    at: datetime,
    charged: float,
    plan: _Plan,
    report: IngestReport,
) -> None:
    """A job gpucenter submitted: charged by the loop at its end; make the ledger say what
    Slurm says (one correction entry, keyed like any Slurm record)."""
    if not JobState(job.state).is_terminal:
        report.deferred.append(record.job_id)  # the loop's charge first, then the correction
        return
    if record.gpu_util_pct is not None:
        plan.utilisation.append((job.id, job.runs or 1, record.gpu_util_pct, at))
    if (job.runs or 0) > 1 or job.allocation_id is None:
        report.already += 1
        return
    delta = record.gpu_seconds - charged
    if abs(delta) < 1.0:
        report.already += 1
        return
    plan.charges.append(
        UsageCharge(record.source, job.allocation_id, record.gpu_type or "gpu", delta, at, job.id)
    )
    plan.usage[(job.project_id, job.user_id)] += delta
    report.corrected.append(record.job_id)
    report.gpu_seconds += delta


def _foreign(
    s: Session,
    record: UsageRecord,
    at: datetime,
    projects: dict[str, ProjectRow],
    users: dict[str, int],
    policy: str,
    plan: _Plan,
    report: IngestReport,
    now: datetime,
) -> None:
    """A job submitted to Slurm directly under a project's account (not through gpucenter)."""
    project = projects.get(record.account)
    if project is None:
        report.skipped.append((record.job_id, f"account {record.account!r} is no project"))
        return
    if policy == "flag":
        plan.flags.append(_flag(record, project, at, now, "not charged (the site flags such jobs)"))
        plan.outside.append((project, record, False))
        report.flagged.append(record.job_id)
        return
    allocation = repo.active_allocation(s, project.id, at, record.gpu_type)
    if allocation is None:
        report.skipped.append((record.job_id, f"project {project.name} has no allocation"))
        return
    plan.flags.append(_flag(record, project, at, now, "charged to the project's allocation"))
    plan.outside.append((project, record, True))
    report.flagged.append(record.job_id)
    plan.charges.append(
        UsageCharge(
            record.source, allocation.id, record.gpu_type or "gpu", record.gpu_seconds, at, None
        )
    )
    user_id = users.get(record.user)
    if user_id is not None:
        plan.usage[(project.id, user_id)] += record.gpu_seconds
    report.charged.append(record.job_id)
    report.gpu_seconds += record.gpu_seconds


def _flag(
    record: UsageRecord, project: ProjectRow, at: datetime, now: datetime, charged: str
) -> UsageFlagRow:
    return UsageFlagRow(
        source=record.source,
        project_id=project.id,
        account=record.account,
        username=record.user,
        gpu_type=record.gpu_type or "gpu",
        gpu_seconds=record.gpu_seconds,
        ended_at=at,
        reason=f"Slurm job {record.job_id} ran under the project's Slurm account outside "
        f"gpucenter (submitted by {record.user or '?'}, no valid gpucenter marker); {charged}",
        created_at=now,
    )


def _earlier_run(
    job: JobRow,
    record: UsageRecord,
    key: MarkerKey | None,
    projects: dict[str, ProjectRow],
    users: dict[str, int],
    run_ids: dict[int, str | None] | None = None,
) -> bool:
    """Is `record` an earlier run of the requeued `job` (charged per run by the loop)? Only
    with a valid marker of an earlier run, as the job's owner, under its project's account:
    a comment that merely names the job is an outside submission. Where the job's runs were
    recorded (`job_runs`, every run started since migration 0021), the Slurm job must also be
    the one that run was: the owner can copy an earlier run's marker into a job of their own,
    and that job is then an outside submission, charged (or flagged) like any. (A run started
    before that migration has no row; its marker alone still counts.)"""
    runs = job.runs or 0
    if runs <= 1:
        return False
    if key is None:
        return True
    valid = key.valid(record.comment)
    if valid is None or valid.job_id != job.id or valid.run is None or valid.run >= runs:
        return False
    if run_ids is not None and valid.run in run_ids and run_ids[valid.run] != record.job_id:
        return False  # a recorded run was another Slurm job: this one carries a copy
    project = projects.get(record.account)
    return (
        project is not None
        and project.id == job.project_id
        and users.get(record.user) == job.user_id
    )


def _tell_outside(
    s: Session, found: Sequence[tuple[ProjectRow, UsageRecord, bool]], now: datetime
) -> None:
    """An audit entry for the centre's admins and a notification to the project's members
    (its PI among them) for each outside submission found."""
    from gpucenter.services.accounting.budgets import notify_project
    from gpucenter.services.identity import audit

    for project, record, charged in found:
        hours = record.gpu_seconds / 3600
        audit.log(
            s,
            OUTSIDE_JOB,
            audit.SYSTEM,
            now,
            "project",
            project.id,
            {
                "slurm_job": record.source,
                "account": record.account,
                "user": record.user,
                "gpu_hours": round(hours, 4),
                "charged": charged,
            },
        )
        notify_project(
            s,
            project.id,
            "slurm_outside_job",
            f"Slurm job {record.job_id} ran under project {project.name} outside gpucenter",
            f"{record.user or 'Someone'} ran Slurm job {record.job_id} directly under the "
            f"project's account {record.account} ({hours:.3f} GPU-hours), not through "
            "gpucenter. "
            + (
                "It is charged to the project's allocation. "
                if charged
                else "It is not charged; the centre reviews it. "
            )
            + "Submit jobs through gpucenter; ask the centre if this was not you.",
            now,
        )


_CHUNK = 5_000


def _present_sources(s: Session, sources: Sequence[str]) -> set[str]:
    """The sources already charged or flagged (a re-read window is mostly these)."""
    found: set[str] = set()
    for i in range(0, len(sources), _CHUNK):
        chunk = list(sources[i : i + _CHUNK])
        found.update(
            s.scalars(select(LedgerEntryRow.source).where(LedgerEntryRow.source.in_(chunk)))
        )
        found.update(s.scalars(select(UsageFlagRow.source).where(UsageFlagRow.source.in_(chunk))))
    return found


def _jobs(s: Session, ids: Sequence[int]) -> dict[int, JobRow]:
    out: dict[int, JobRow] = {}
    for i in range(0, len(ids), _CHUNK):
        chunk = sorted(set(ids[i : i + _CHUNK]))
        out.update({j.id: j for j in s.scalars(select(JobRow).where(JobRow.id.in_(chunk)))})
    return out


def _run_ids(s: Session, ids: Sequence[int]) -> dict[int, dict[int, str | None]]:
    """job id -> {run: the site job id it had}, for the jobs given (recorded runs only)."""
    found: dict[int, dict[int, str | None]] = defaultdict(dict)
    if ids:
        rows = s.execute(
            select(JobRunRow.job_id, JobRunRow.run, JobRunRow.external_id).where(
                JobRunRow.job_id.in_(ids)
            )
        )
        for job_id, run, external_id in rows:
            found[job_id][run] = external_id
    return found


def _charged_per_job(s: Session, ids: Sequence[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for i in range(0, len(ids), _CHUNK):
        chunk = list(ids[i : i + _CHUNK])
        rows = s.execute(
            select(LedgerEntryRow.job_id, func.sum(LedgerEntryRow.gpu_seconds))
            .where(LedgerEntryRow.job_id.in_(chunk))
            .group_by(LedgerEntryRow.job_id)
        )
        out.update({int(job_id): float(total or 0.0) for job_id, total in rows})
    return out


def _projects_by_account(s: Session, top: str) -> dict[str, ProjectRow]:
    """Each project by its Slurm account (namespaced under `top`), and by its bare name for
    accounts made before names were namespaced."""
    out: dict[str, ProjectRow] = {}
    for project in s.scalars(select(ProjectRow)):
        out.setdefault(project.name, project)
        out[project_account_name(project.name, top)] = project
    return out
