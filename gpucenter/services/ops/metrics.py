"""Operator metrics in the Prometheus text format, without a client library.

Gauges (queue depth, GPUs busy, ledger lag) are read from the database at scrape time, so
every server answers the same and nothing has to be kept in step. Counters and the cycle
time histogram live in the process that runs the scheduler loop: `OPERATOR_METRICS` is the
one instance it records into (`observe_cycle`, `dispatch_error`). With `serve --workers N`
that is not the process answering /metrics, so the loop publishes its counters to a small
file per process under `<var_dir>/metrics/` (atomically replaced, at most once a second) and
every process adds up the files of the live processes beside its own counters.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import String, cast, exists, func, select
from sqlalchemy.orm import Session

from gpucenter.config import Settings
from gpucenter.domain.jobs import JobState
from gpucenter.persistence.tables import JobRow, LedgerEntryRow, SiteRow

CYCLE_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_WINDOW = timedelta(days=7)


@dataclass
class OperatorMetrics:
    """Process-local counters: the scheduler loop's pass times and dispatch errors."""

    buckets: tuple[float, ...] = CYCLE_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(CYCLE_BUCKETS) + 1))
    cycle_sum: float = 0.0
    cycle_count: int = 0
    dispatch_errors: dict[str, int] = field(default_factory=dict)
    pass_failures: int = 0
    """Scheduling passes that raised, ever (a counter)."""
    failing_passes: int = 0
    """Passes that raised in a row, up to now (0 after a pass that worked): /readyz reads it."""
    last_pass_error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _published_at: float = 0.0

    def pass_failed(self, error: str) -> None:
        with self._lock:
            self.pass_failures += 1
            self.failing_passes += 1
            self.last_pass_error = error[:300]

    def pass_succeeded(self) -> None:
        with self._lock:
            self.failing_passes = 0
            self.last_pass_error = ""

    def observe_cycle(self, seconds: float) -> None:
        with self._lock:
            self.counts[bisect_left(self.buckets, seconds)] += 1
            self.cycle_sum += seconds
            self.cycle_count += 1

    def dispatch_error(self, site: str) -> None:
        with self._lock:
            self.dispatch_errors[site] = self.dispatch_errors.get(site, 0) + 1

    def to_json(self) -> str:
        with self._lock:
            return json.dumps(
                {
                    "buckets": list(self.buckets),
                    "counts": self.counts,
                    "cycle_sum": self.cycle_sum,
                    "cycle_count": self.cycle_count,
                    "dispatch_errors": self.dispatch_errors,
                    "pass_failures": self.pass_failures,
                    "failing_passes": self.failing_passes,
                    "last_pass_error": self.last_pass_error,
                }
            )

    def add(self, text: str) -> None:
        """Add another process's published counters (same buckets) to these."""
        other = json.loads(text)
        if tuple(other["buckets"]) != self.buckets:
            return
        with self._lock:
            self.counts = [a + int(b) for a, b in zip(self.counts, other["counts"], strict=True)]
            self.cycle_sum += float(other["cycle_sum"])
            self.cycle_count += int(other["cycle_count"])
            for site, n in other["dispatch_errors"].items():
                self.dispatch_errors[site] = self.dispatch_errors.get(site, 0) + int(n)
            self.pass_failures += int(other.get("pass_failures", 0))
            # The worst process decides readiness: the leader's failures, wherever it runs.
            if int(other.get("failing_passes", 0)) > self.failing_passes:
                self.failing_passes = int(other["failing_passes"])
                self.last_pass_error = str(other.get("last_pass_error", ""))

    def publish(self, directory: Path, *, every_s: float = 1.0, force: bool = False) -> None:
        """Write this process's counters to `directory/<pid>.json` for the other processes
        (at most every `every_s` seconds unless `force`; a torn file is never seen: write,
        then rename)."""
        now = time.monotonic()
        if not force and now - self._published_at < every_s:
            return
        self._published_at = now
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)

    def lines(self) -> list[str]:
        with self._lock:
            out = [
                "# HELP gpucenter_cycle_seconds Scheduler pass duration.",
                "# TYPE gpucenter_cycle_seconds histogram",
            ]
            running = 0
            for bound, n in zip(self.buckets, self.counts, strict=False):
                running += n
                out.append(f'gpucenter_cycle_seconds_bucket{{le="{bound}"}} {running}')
            out.append(f'gpucenter_cycle_seconds_bucket{{le="+Inf"}} {self.cycle_count}')
            out.append(f"gpucenter_cycle_seconds_sum {self.cycle_sum}")
            out.append(f"gpucenter_cycle_seconds_count {self.cycle_count}")
            out += [
                "# HELP gpucenter_dispatch_errors_total Failed dispatcher calls.",
                "# TYPE gpucenter_dispatch_errors_total counter",
            ]
            out += [
                f'gpucenter_dispatch_errors_total{{site="{_esc(k)}"}} {v}'
                for k, v in sorted(self.dispatch_errors.items())
            ]
            out += [
                "# HELP gpucenter_scheduler_pass_failures_total Scheduling passes that failed.",
                "# TYPE gpucenter_scheduler_pass_failures_total counter",
                f"gpucenter_scheduler_pass_failures_total {self.pass_failures}",
                "# HELP gpucenter_scheduler_failing_passes Passes failed in a row, up to now.",
                "# TYPE gpucenter_scheduler_failing_passes gauge",
                f"gpucenter_scheduler_failing_passes {self.failing_passes}",
            ]
            return out


OPERATOR_METRICS = OperatorMetrics()


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _gauge(name: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]) -> list[str]:
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    for labels, v in samples:
        text = ",".join(f'{k}="{_esc(str(val))}"' for k, val in labels.items())
        out.append(f"{name}{{{text}}} {v}" if text else f"{name} {v}")
    return out


@dataclass(frozen=True, slots=True)
class LedgerLag:
    """Ended job runs not yet charged (within LAG_WINDOW), and the age of the oldest."""

    uncharged_runs: int
    oldest_s: float


def ledger_lag(s: Session, now: datetime) -> LedgerLag:
    source = "job:" + cast(JobRow.id, String) + ":run:" + cast(JobRow.runs, String)
    charged = exists().where(LedgerEntryRow.source == source)
    terminal = [st.value for st in JobState if st.is_terminal]
    n, oldest = s.execute(
        select(func.count(JobRow.id), func.min(JobRow.ended_at)).where(
            JobRow.state.in_(terminal),
            JobRow.started_at.is_not(None),
            JobRow.allocation_id.is_not(None),
            JobRow.ended_at >= now - LAG_WINDOW,
            ~charged,
        )
    ).one()
    if not n or oldest is None:
        return LedgerLag(0, 0.0)
    from gpucenter.domain.clock import as_utc

    return LedgerLag(int(n), max((now - as_utc(oldest)).total_seconds(), 0.0))


def gathered(
    directory: Path | None, process: OperatorMetrics = OPERATOR_METRICS
) -> OperatorMetrics:
    """This process's counters plus those the other live processes published."""
    total = OperatorMetrics(process.buckets)
    total.add(process.to_json())
    if directory is None or not directory.is_dir():
        return total
    for path in directory.glob("*.json"):
        if not path.stem.isdigit() or int(path.stem) == os.getpid():
            continue
        if not _alive(int(path.stem)):
            with contextlib.suppress(OSError):
                path.unlink()  # a process that ended: its counters reset, as Prometheus expects
            continue
        with contextlib.suppress(OSError, ValueError, KeyError):
            total.add(path.read_text())
    return total


def metrics_dir(settings: Settings) -> Path:
    """Where this server's processes publish their counters to each other."""
    return settings.var_dir / "metrics"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def render(
    s: Session,
    now: datetime,
    process: OperatorMetrics = OPERATOR_METRICS,
    shared_dir: Path | None = None,
) -> str:
    """The whole exposition: database gauges, then the counters of every process of this
    server (see the module docstring)."""
    depth = s.execute(
        select(JobRow.gpu_type, func.count(JobRow.id))
        .where(JobRow.state == JobState.PENDING.value)
        .group_by(JobRow.gpu_type)
        .order_by(JobRow.gpu_type)
    )
    busy = s.execute(
        select(SiteRow.name, JobRow.gpu_type, func.sum(JobRow.gpus_per_node * JobRow.nodes))
        .join(SiteRow, SiteRow.id == JobRow.site_id)
        .where(JobRow.state == JobState.RUNNING.value)
        .group_by(SiteRow.name, JobRow.gpu_type)
        .order_by(SiteRow.name, JobRow.gpu_type)
    )
    lag = ledger_lag(s, now)
    lines = _gauge(
        "gpucenter_queue_depth",
        "Pending jobs by GPU type.",
        (({"gpu_type": t}, n) for t, n in depth),
    )
    lines += _gauge(
        "gpucenter_gpus_busy",
        "GPUs held by running jobs, by site and GPU type.",
        (({"site": site, "gpu_type": t}, int(n or 0)) for site, t, n in busy),
    )
    lines += _gauge(
        "gpucenter_ledger_lag_seconds",
        "Age of the oldest ended job run not yet charged.",
        [({}, lag.oldest_s)],
    )
    lines += _gauge(
        "gpucenter_ledger_uncharged_runs",
        "Ended job runs not yet charged.",
        [({}, lag.uncharged_runs)],
    )
    return "\n".join(lines + gathered(shared_dir, process).lines()) + "\n"


__all__ = [
    "OPERATOR_METRICS",
    "metrics_dir",
    "render",
]
