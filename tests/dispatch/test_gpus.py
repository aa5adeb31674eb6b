"""GPU discovery and GPU-type names; on a machine with NVIDIA GPUs, real visibility checks."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from gpucenter.core.model import NodeGpus
from gpucenter.dispatch.base import LaunchRequest
from gpucenter.dispatch.gpus import DetectedGpu, detect_nvidia_gpus, gpu_type_from_name
from gpucenter.dispatch.local.dispatcher import LocalDispatcher
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState

NAMES = {
    "NVIDIA H100 80GB HBM3": "h100",
    "NVIDIA H100 PCIe": "h100",
    "NVIDIA H100 NVL": "h100",
    "NVIDIA H200": "h200",
    "NVIDIA H200 NVL": "h200",
    "NVIDIA B200": "b200",
    "NVIDIA A100-SXM4-80GB": "a100",
    "NVIDIA A100 80GB PCIe": "a100",
    "NVIDIA L40S": "l40s",
    "Tesla V100-SXM2-32GB": "v100",
    "NVIDIA A10": "a10",
    "Tesla T4": "t4",
    # Whole tokens only: these are other products, not the known types they contain.
    "NVIDIA GH200 480GB": "gh200-480gb",
    "NVIDIA A10G": "a10g",
    "NVIDIA L40": "l40",
    "NVIDIA RTX 6000 Ada Generation": "rtx-6000-ada-generation",
    "NVIDIA GeForce RTX 4090": "geforce-rtx-4090",
    "NVIDIA": "nvidia",
    "": "unknown",
}


@pytest.mark.parametrize("name", NAMES)
def test_gpu_type_from_name(name: str) -> None:
    assert gpu_type_from_name(name) == NAMES[name]


def test_detect_returns_a_list_without_raising() -> None:
    gpus = detect_nvidia_gpus()
    assert isinstance(gpus, list)
    assert all(isinstance(g, DetectedGpu) for g in gpus)
    assert [g.index for g in gpus] == list(range(len(gpus)))


# A CUDA driver API probe: unlike nvidia-smi (NVML), it honours CUDA_VISIBLE_DEVICES.
CUDA_PROBE = """
import ctypes, sys
cuda = ctypes.CDLL("libcuda.so.1")
if cuda.cuInit(0) != 0:  # CUDA_ERROR_NO_DEVICE when nothing is visible
    print(0); sys.exit(0)
n = ctypes.c_int()
assert cuda.cuDeviceGetCount(ctypes.byref(n)) == 0
print(n.value)
for i in range(n.value):
    dev, uuid = ctypes.c_int(), (ctypes.c_ubyte * 16)()
    assert cuda.cuDeviceGet(ctypes.byref(dev), i) == 0
    assert cuda.cuDeviceGetUuid(uuid, dev) == 0
    print(bytes(uuid).hex())
"""


def _run(d: LocalDispatcher, job_id: int, gpus: tuple[int, ...], probe: Path) -> list[str]:
    launched = d.submit(
        LaunchRequest(
            job_id=JobId(job_id),
            command=f"echo $CUDA_VISIBLE_DEVICES; {sys.executable} {probe}",
            placement=(NodeGpus("local", gpus),),
            time_limit_s=60,
            workdir=None,
        )
    )
    deadline = time.monotonic() + 60
    while not (changes := d.poll()):
        assert time.monotonic() < deadline, "the probe job did not end"
        time.sleep(0.05)
    assert changes[0].state is JobState.COMPLETED, Path(launched.stderr_path).read_text()
    return Path(launched.stdout_path).read_text().split()


@pytest.mark.gpu
def test_a_job_sees_only_its_gpus(tmp_path: Path) -> None:
    gpus = detect_nvidia_gpus()
    if not gpus:
        pytest.skip("no NVIDIA GPU on this machine: skipped the visibility check")
    probe = tmp_path / "probe.py"
    probe.write_text(CUDA_PROBE)
    last = gpus[-1]
    d = LocalDispatcher(tmp_path / "logs", gpu_index_map={"local": [last.index]})
    try:
        # Slot 0 is mapped to the machine's last GPU: the job sees that one GPU, and it is
        # the same device for CUDA as for NVML (same UUID), thanks to PCI_BUS_ID ordering.
        assert _run(d, 1, (0,), probe) == [
            str(last.index),
            "1",
            last.uuid.removeprefix("GPU-").replace("-", "").lower(),
        ]
        # No GPUs in the placement: none visible, even though the machine has some.
        assert _run(d, 2, (), probe) == ["0"]
    finally:
        d.shutdown()
