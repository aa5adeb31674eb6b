"""Alibaba openb (cluster-trace-gpu-v2023) pod and node lists, for GPU-sharing placement.

Node list columns: `sn` (name), `cpu_milli`, `memory_mib`, `gpu` (count), `model` (empty on
CPU-only nodes). Pod list columns: `name`, `cpu_milli`, `memory_mib`, `num_gpu`, `gpu_milli`
(thousandths of each GPU; 1000 is a whole GPU), optional `gpu_spec` (acceptable models,
`|`-separated, empty = any) and `creation_time` (s). Other columns are ignored.

The data are research/study-use only: benchmarks read them from ../shared at run time; never
vendor them into tests or the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpucenter.core.fractional import ShareNode, ShareRequest
from gpucenter.sim.traces.common import TraceError, read_rows, whole


@dataclass(frozen=True, slots=True)
class OpenbPod:
    """A pod of the list: its name, creation time and what it requests."""

    name: str
    creation_s: float
    request: ShareRequest


def load_openb_nodes(path: str | Path, *, gpu_only: bool = True) -> tuple[ShareNode, ...]:
    """Nodes of an openb node list (GPU nodes only, unless `gpu_only` is False)."""
    nodes: list[ShareNode] = []
    for line, row in read_rows(path, ("sn", "cpu_milli", "memory_mib", "gpu", "model")):
        gpus = whole(path, line, "gpu", row["gpu"])
        if gpu_only and gpus == 0:
            continue
        model = (row["model"] or "").strip()
        if gpus and not model:
            raise TraceError(path, line, "a node with GPUs must name its model")
        nodes.append(
            ShareNode(
                name=row["sn"],
                model=model,
                gpus=gpus,
                milli_cpu=whole(path, line, "cpu_milli", row["cpu_milli"]),
                memory_mib=whole(path, line, "memory_mib", row["memory_mib"]),
            )
        )
    if not nodes:
        raise TraceError(path, None, "the node list has no nodes")
    return tuple(nodes)


def load_openb_pods(path: str | Path) -> tuple[OpenbPod, ...]:
    """Pods of an openb pod list, in file order."""
    pods: list[OpenbPod] = []
    for line, row in read_rows(path, ("name", "cpu_milli", "num_gpu", "gpu_milli")):
        gpus = whole(path, line, "num_gpu", row["num_gpu"])
        milli = whole(path, line, "gpu_milli", row["gpu_milli"])
        if gpus == 0:
            milli = 0
        spec = (row.get("gpu_spec") or "").strip()
        models = frozenset(m for m in spec.split("|") if m) if spec else frozenset()
        created = row.get("creation_time") or "0"
        try:
            req = ShareRequest(
                milli_cpu=whole(path, line, "cpu_milli", row["cpu_milli"]),
                memory_mib=whole(path, line, "memory_mib", row.get("memory_mib") or "0"),
                gpus=gpus,
                milli_gpu=milli,
                gpu_models=models,
            )
        except ValueError as exc:
            raise TraceError(path, line, str(exc)) from None
        pods.append(OpenbPod(row["name"], float(whole(path, line, "creation_time", created)), req))
    if not pods:
        raise TraceError(path, None, "the pod list has no pods")
    return tuple(pods)
