"""Measured GPU utilisation for use-it-or-lose-it: NVML samples on the local executor, and
Slurm's `gres/gpuutil` TRES where the cluster's accounting gathers it.

Neither source is always there (no driver on a laptop; Slurm without the GPU TRES), so both
return None rather than a guess, and the assessment then rests on GPU-hours alone.
`UtilisationSampler` keeps a running mean per job over the GPU indices the job holds; the
local dispatcher calls `sample()` on its poll and `finish(job)` at the end and reports the
mean in the job's final StateChange; the scheduling service stores it with
`accounting_useit.record_utilisation`. It lives in dispatch/ because only dispatchers touch
GPUs and clusters.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

_GPUUTIL = re.compile(r"(?:^|,)gres/gpuutil=(\d+(?:\.\d+)?)")


def parse_slurm_gpuutil(tres: str) -> float | None:
    """The GPU utilisation percentage in a sacct TRES string (TRESUsageInAve), if any."""
    m = _GPUUTIL.search(tres or "")
    return None if m is None else min(float(m.group(1)), 100.0)


def nvml_reader() -> Callable[[int], float] | None:
    """A function from NVML index to current utilisation %, or None without a driver."""
    try:
        import pynvml

        nvml: Any = pynvml
        nvml.nvmlInit()
    except Exception:  # no module, no driver, no GPUs: measuring is simply unavailable
        return None

    def read(index: int) -> float:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        return float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)

    return read


@dataclass
class _Running:
    indices: tuple[int, ...]
    total: float = 0.0
    samples: int = 0


@dataclass
class UtilisationSampler:
    """Running mean utilisation per job; `read` is NVML's (or a fake in tests)."""

    read: Callable[[int], float]
    _jobs: dict[int, _Running] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, job_id: int, gpu_indices: Sequence[int]) -> None:
        with self._lock:
            self._jobs[job_id] = _Running(tuple(gpu_indices))

    def sample(self) -> None:
        """One reading of every GPU of every watched job; a failing GPU is skipped."""
        with self._lock:
            for run in self._jobs.values():
                for index in run.indices:
                    try:
                        run.total += self.read(index)
                        run.samples += 1
                    except Exception as exc:  # a GPU that fell off the bus: skip it
                        log.debug("utilisation of GPU %d unreadable: %s", index, exc)

    def finish(self, job_id: int) -> tuple[float, int] | None:
        """(mean %, samples) for the job, or None if it was never sampled."""
        with self._lock:
            run = self._jobs.pop(job_id, None)
        if run is None or run.samples == 0:
            return None
        return run.total / run.samples, run.samples
