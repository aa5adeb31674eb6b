"""What every trace loader produces, and how loaders report a malformed row.

A trace is a tuple of `TraceJob`s sorted by submit time (ties by id). Times are seconds from
the start of the trace, so that every format (wall-clock timestamps, offsets) replays the
same way and a replay never depends on the machine's time zone.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class ApplicantType(StrEnum):
    """Who applied for the GPU time; shares and reports are kept per type."""

    INSTITUTE = "institute"
    UNIVERSITY = "university"
    STARTUP = "startup"
    SME = "sme"
    FOUNDATION = "foundation"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job of a trace.

    `duration_s` is how long the job runs once started; `time_limit_s` what the user asked
    for (None: the scheduler is told the true duration, the usual trace-replay assumption).
    `gpu_type` None means the job runs on any type.
    """

    job_id: int
    submit_s: float
    duration_s: float
    gpus: int
    gpu_type: str | None = None
    tenant: str = "default"
    applicant_type: ApplicantType = ApplicantType.UNKNOWN
    time_limit_s: float | None = None

    @property
    def gpu_seconds(self) -> float:
        return self.gpus * self.duration_s


class TraceError(ValueError):
    """A trace file could not be read: which file, which line, and what is wrong."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line
        self.message = message


def read_rows(
    path: str | Path, required: Sequence[str], *, delimiter: str = ","
) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV file with a header, as (line number, row); checks the columns first."""
    p = Path(path)
    if not p.is_file():
        raise TraceError(p, None, "no such file")
    with p.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise TraceError(
                p, 1, f"missing column(s) {', '.join(missing)}; found {', '.join(header) or 'none'}"
            )
        for row in reader:
            yield reader.line_num, row


def number(path: str | Path, line: int, column: str, text: str | None) -> float:
    """A float cell, or a TraceError that names the cell."""
    if text is None or text.strip() == "":
        raise TraceError(path, line, f"column {column!r} is empty")
    try:
        return float(text)
    except ValueError:
        raise TraceError(path, line, f"column {column!r} is not a number: {text!r}") from None


def whole(path: str | Path, line: int, column: str, text: str | None, minimum: int = 0) -> int:
    """A non-negative integer cell (floats like '4.0' accepted), or a TraceError."""
    value = number(path, line, column, text)
    if value != int(value):
        raise TraceError(path, line, f"column {column!r} must be a whole number: {text!r}")
    if value < minimum:
        raise TraceError(path, line, f"column {column!r} must be at least {minimum}: {text!r}")
    return int(value)


def finish(jobs: list[TraceJob], path: str | Path) -> tuple[TraceJob, ...]:
    """Shift times so the first submit is 0 and sort; an empty trace is an error."""
    if not jobs:
        raise TraceError(path, None, "the trace has no jobs")
    t0 = min(j.submit_s for j in jobs)
    if t0 != 0:
        jobs = [
            TraceJob(
                j.job_id,
                j.submit_s - t0,
                j.duration_s,
                j.gpus,
                j.gpu_type,
                j.tenant,
                j.applicant_type,
                j.time_limit_s,
            )
            for j in jobs
        ]
    jobs.sort(key=lambda j: (j.submit_s, j.job_id))
    return tuple(jobs)
