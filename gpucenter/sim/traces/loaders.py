"""Loaders for the job traces a capacity planner replays.

Every loader returns `tuple[TraceJob, ...]` (see `common.py`) and raises `TraceError` naming
file, line and cell on a malformed row. Schemas:

* Philly (Pollux/Sia extract, `philly.csv`): `timestamp` (YYYY-MM-DD HH:MM:SS, UTC),
  `duration` (s), `num_gpus`, optional `cluster` (virtual cluster, becomes the tenant).
* Tiresias (`*_job.csv`): `job_id`, `num_gpu`, `submit_time` (s), `duration` (s); optional
  `model_name`. Rows with 0 GPUs are skipped, as Tiresias does.
* Gavel (`*.trace`, tab-separated, no header): 10 fields (job_type, command,
  working_directory, num_steps_arg, needs_data_dir, total_steps, scale_factor,
  priority_weight, SLO, arrival_time) or the older 7 (job_type, command, num_steps_arg,
  needs_data_dir, total_steps, arrival_time, scale_factor). A duration needs a throughput:
  `steps_per_s` maps job_type to steps per second (see `gavel_throughputs`); rows with
  scale_factor 0 are skipped, as Gavel does. Shockwave's traces are Gavel's with 12 fields
  (..., scale_factor, mode, priority_weight, SLO, duration, arrival_time): the duration is
  given, so no throughput is needed.
* Generic CSV: `submit_time` (s), `duration` (s), `gpus`; optional `job_id`, `gpu_type`,
  `tenant`, `applicant_type` (institute, university, startup, sme, foundation),
  `time_limit` (s, the limit the user asked for; at least the duration).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from gpucenter.sim.traces.common import (
    ApplicantType,
    TraceError,
    TraceJob,
    finish,
    number,
    read_rows,
    whole,
)

_APPLICANTS = {a.value: a for a in ApplicantType}


def load_philly(path: str | Path) -> tuple[TraceJob, ...]:
    """The Philly job extract (82,248 jobs; Jeon et al., ATC '19, CC BY 4.0)."""
    jobs: list[TraceJob] = []
    for line, row in read_rows(path, ("timestamp", "duration", "num_gpus")):
        stamp = (row["timestamp"] or "").strip()
        try:
            if len(stamp) != 19:
                raise ValueError(stamp)
            when = datetime.fromisoformat(stamp).replace(tzinfo=UTC)
        except ValueError:
            raise TraceError(
                path, line, f"column 'timestamp' is not YYYY-MM-DD HH:MM:SS: {stamp!r}"
            ) from None
        gpus = whole(path, line, "num_gpus", row["num_gpus"], minimum=1)
        duration = number(path, line, "duration", row["duration"])
        if duration < 0:
            raise TraceError(path, line, f"column 'duration' is negative: {row['duration']!r}")
        jobs.append(
            TraceJob(
                job_id=len(jobs),
                submit_s=when.timestamp(),
                duration_s=max(duration, 1.0),
                gpus=gpus,
                tenant=(row.get("cluster") or "default").strip() or "default",
            )
        )
    return finish(jobs, path)


def load_tiresias(path: str | Path) -> tuple[TraceJob, ...]:
    """A Tiresias simulator job list (`60_job.csv`, `tf_job.csv`)."""
    jobs: list[TraceJob] = []
    for line, row in read_rows(path, ("job_id", "num_gpu", "submit_time", "duration")):
        gpus = whole(path, line, "num_gpu", row["num_gpu"])
        if gpus == 0:
            continue
        duration = number(path, line, "duration", row["duration"])
        if duration <= 0:
            raise TraceError(path, line, "column 'duration' must be positive")
        jobs.append(
            TraceJob(
                job_id=whole(path, line, "job_id", row["job_id"]),
                submit_s=number(path, line, "submit_time", row["submit_time"]),
                duration_s=duration,
                gpus=gpus,
                tenant=(row.get("model_name") or "default").strip() or "default",
            )
        )
    return finish(jobs, path)


def gavel_throughputs(path: str | Path, gpu_type: str = "v100") -> dict[str, float]:
    """Isolated steps/s per job type on one GPU, from Gavel's `simulation_throughputs.json`."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TraceError(p, None, f"cannot read throughputs: {exc}") from None
    if gpu_type not in data:
        raise TraceError(p, None, f"no GPU type {gpu_type!r}; found {', '.join(sorted(data))}")
    out: dict[str, float] = {}
    for key, entry in data[gpu_type].items():
        try:
            job_type, scale = ast.literal_eval(key)
        except (ValueError, SyntaxError):
            continue
        if scale == 1 and isinstance(entry, dict) and entry.get("null"):
            out[str(job_type)] = float(entry["null"])
    return out


def load_gavel(
    path: str | Path, steps_per_s: Mapping[str, float] | None = None
) -> tuple[TraceJob, ...]:
    """A Gavel (or Shockwave) trace; durations are total_steps / steps_per_s[job_type], or
    the trace's own duration field where it has one (Shockwave's 12 fields)."""
    steps_per_s = steps_per_s or {}
    p = Path(path)
    if not p.is_file():
        raise TraceError(p, None, "no such file")
    jobs: list[TraceJob] = []
    with p.open(encoding="utf-8") as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            f = text.rstrip("\n").split("\t")
            given: str | None = None
            if len(f) == 12:
                job_type, steps_s, scale_s, given, arrival_s = f[0], f[5], f[6], f[10], f[11]
            elif len(f) == 10:
                job_type, steps_s, scale_s, arrival_s = f[0], f[5], f[6], f[9]
            elif len(f) == 7:
                job_type, steps_s, arrival_s, scale_s = f[0], f[4], f[5], f[6]
            else:
                raise TraceError(
                    p, line, f"expected 7, 10 or 12 tab-separated fields, got {len(f)}"
                )
            scale = whole(p, line, "scale_factor", scale_s)
            if scale == 0:
                continue
            if given is not None:
                duration = number(p, line, "duration", given)
            else:
                rate = steps_per_s.get(job_type)
                if not rate:
                    raise TraceError(p, line, f"no throughput for job type {job_type!r}")
                duration = number(p, line, "total_steps", steps_s) / rate
            jobs.append(
                TraceJob(
                    job_id=len(jobs),
                    submit_s=number(p, line, "arrival_time", arrival_s),
                    duration_s=max(duration, 1.0),
                    gpus=scale,
                    tenant=job_type.split(" (")[0],
                )
            )
    return finish(jobs, p)


def load_generic(path: str | Path) -> tuple[TraceJob, ...]:
    """The generic CSV (see the module docstring): the format to hand-write a what-if in."""
    jobs: list[TraceJob] = []
    for line, row in read_rows(path, ("submit_time", "duration", "gpus")):
        duration = number(path, line, "duration", row["duration"])
        if duration <= 0:
            raise TraceError(path, line, f"column 'duration' must be positive: {row['duration']!r}")
        submit = number(path, line, "submit_time", row["submit_time"])
        if submit < 0:
            raise TraceError(path, line, "column 'submit_time' must not be negative")
        kind = (row.get("applicant_type") or "unknown").strip().lower() or "unknown"
        applicant = _APPLICANTS.get(kind)
        if applicant is None:
            raise TraceError(
                path,
                line,
                f"unknown applicant_type {kind!r}; use one of {', '.join(_APPLICANTS)}",
            )
        limit_s = (row.get("time_limit") or "").strip()
        limit = number(path, line, "time_limit", limit_s) if limit_s else None
        if limit is not None and limit < duration:
            raise TraceError(path, line, "column 'time_limit' is shorter than the duration")
        job_id_s = (row.get("job_id") or "").strip()
        jobs.append(
            TraceJob(
                job_id=whole(path, line, "job_id", job_id_s) if job_id_s else len(jobs),
                submit_s=submit,
                duration_s=duration,
                gpus=whole(path, line, "gpus", row["gpus"], minimum=1),
                gpu_type=(row.get("gpu_type") or "").strip() or None,
                tenant=(row.get("tenant") or "").strip() or applicant.value,
                applicant_type=applicant,
                time_limit_s=limit,
            )
        )
    if len({j.job_id for j in jobs}) != len(jobs):
        raise TraceError(path, None, "job_id values are not unique")
    return finish(jobs, path)


def write_generic(jobs: tuple[TraceJob, ...] | list[TraceJob], path: str | Path) -> None:
    """Write jobs as the generic CSV (what `load_generic` reads back unchanged)."""
    import csv

    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["job_id", "submit_time", "duration", "gpus", "gpu_type", "tenant", "applicant_type"]
        )
        for j in jobs:
            w.writerow(
                [
                    j.job_id,
                    repr(j.submit_s),
                    repr(j.duration_s),
                    j.gpus,
                    j.gpu_type or "",
                    j.tenant,
                    j.applicant_type.value,
                ]
            )


FORMATS = ("philly", "tiresias", "csv")


def load_trace(path: str | Path, fmt: str) -> tuple[TraceJob, ...]:
    """Load by format name (`philly`, `tiresias`, `csv`); Gavel needs throughputs, see
    `load_gavel`."""
    if fmt == "philly":
        return load_philly(path)
    if fmt == "tiresias":
        return load_tiresias(path)
    if fmt == "csv":
        return load_generic(path)
    raise ValueError(f"unknown trace format {fmt!r}; use one of {', '.join(FORMATS)}")
