"""Discover the NVIDIA GPUs of this machine, so the local site can offer real GPUs.

Discovery goes through NVML (the `pynvml` module of the `nvidia-ml-py` package), the same
library `nvidia-smi` uses, so the indices reported here are `nvidia-smi` indices (PCI bus
order). The local dispatcher sets ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` for its jobs so that CUDA
numbers the devices the same way.

A machine without a driver is normal (laptops, CI, the embedded demo): discovery then returns
an empty list and the site falls back to virtual GPUs. It never raises.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["KNOWN_GPU_TYPES", "DetectedGpu", "detect_nvidia_gpus", "gpu_type_from_name"]

_log = logging.getLogger(__name__)

# GPU types the centre prices and schedules by name. A token of the marketing name that equals
# one of these is the type; anything else becomes a slug of the whole name.
KNOWN_GPU_TYPES: frozenset[str] = frozenset(
    {"h100", "h200", "b200", "a100", "l40s", "v100", "a10", "t4"}
)
# Brand words that carry no information about the type.
_BRAND_TOKENS: frozenset[str] = frozenset({"nvidia", "tesla"})
_TOKEN_SPLIT = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class DetectedGpu:
    """One GPU as NVML reports it; `index` is its NVML (= nvidia-smi) index."""

    index: int
    name: str
    memory_mib: int
    uuid: str


def gpu_type_from_name(name: str) -> str:
    """Turn a marketing name into the short GPU type the scheduler and price list use.

    "NVIDIA H100 80GB HBM3" -> "h100", "Tesla V100-SXM2-32GB" -> "v100". Matching is by whole
    token, so "NVIDIA GH200 480GB" does not become "h200" and "NVIDIA A100" does not become
    "a10". Unknown names become a lowercase slug without brand words
    ("NVIDIA RTX 6000 Ada Generation" -> "rtx-6000-ada-generation"), so every model still
    gets a stable, distinct type.
    """
    tokens = [t for t in _TOKEN_SPLIT.split(name.lower()) if t]
    for token in tokens:
        if token in KNOWN_GPU_TYPES:
            return token
    meaningful = [t for t in tokens if t not in _BRAND_TOKENS]
    return "-".join(meaningful or tokens) or "unknown"


def _text(value: str | bytes) -> str:
    """Older pynvml versions return bytes, newer ones str."""
    return value.decode() if isinstance(value, bytes) else value


def detect_nvidia_gpus() -> list[DetectedGpu]:
    """List the NVIDIA GPUs of this machine, or [] when there is no driver or NVML fails.

    A GPU that NVML cannot describe (fallen off the bus, say) is left out with a warning
    rather than failing discovery of the others: a site with 7 healthy GPUs should offer 7.
    """
    try:
        import pynvml
    except ImportError:
        return []
    nvml: Any = pynvml
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        _log.debug("no NVIDIA GPUs: NVML unavailable (%s)", exc)
        return []
    found: list[DetectedGpu] = []
    try:
        count = int(nvml.nvmlDeviceGetCount())
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                found.append(
                    DetectedGpu(
                        index=index,
                        name=_text(nvml.nvmlDeviceGetName(handle)),
                        memory_mib=int(nvml.nvmlDeviceGetMemoryInfo(handle).total) // 2**20,
                        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    )
                )
            except Exception as exc:
                _log.warning("GPU %d left out: NVML cannot describe it (%s)", index, exc)
    except Exception as exc:
        _log.warning("NVIDIA GPU discovery failed (%s)", exc)
        return []
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            _log.debug("nvmlShutdown failed", exc_info=True)
    return found
