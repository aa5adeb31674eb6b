"""Cluster specs in YAML: sites, network blocks, nodes and GPU types.

    name: national-13k
    sites:
      - name: daejeon
        blocks:                 # a block is a leaf switch / scalable unit
          - name: h100-su       # names become h100-su-0, h100-su-1, ... when count > 1
            count: 20
            nodes: 32           # nodes per block
            gpus_per_node: 8
            gpu_type: h100
    policy:                     # optional: entitled shares by applicant type (sum to 1)
      shares: {foundation: 0.3, institute: 0.2, university: 0.25, startup: 0.1, sme: 0.15}

`load_cluster` validates as it reads and says which key is wrong; `nodes()` expands the spec
into the core's `NodeSnapshot`s (node names `<site>/<block>/n<k>`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gpucenter.core import NodeSnapshot


class ClusterSpecError(ValueError):
    """The cluster YAML is malformed; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class BlockSpec:
    name: str
    nodes: int
    gpus_per_node: int
    gpu_type: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class SiteSpec:
    name: str
    blocks: tuple[BlockSpec, ...]


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    name: str
    sites: tuple[SiteSpec, ...]
    shares: Mapping[str, float] = field(default_factory=dict)

    @property
    def total_gpus(self) -> int:
        return sum(b.count * b.nodes * b.gpus_per_node for s in self.sites for b in s.blocks)

    def gpu_types(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sites:
            for b in s.blocks:
                out[b.gpu_type] = out.get(b.gpu_type, 0) + b.count * b.nodes * b.gpus_per_node
        return out

    def nodes(self) -> tuple[NodeSnapshot, ...]:
        out: list[NodeSnapshot] = []
        for s in self.sites:
            for b in s.blocks:
                for c in range(b.count):
                    block = b.name if b.count == 1 else f"{b.name}-{c}"
                    for k in range(b.nodes):
                        out.append(
                            NodeSnapshot(
                                name=f"{s.name}/{block}/n{k}",
                                gpu_type=b.gpu_type,
                                gpu_count=b.gpus_per_node,
                                block=f"{s.name}/{block}",
                                site=s.name,
                            )
                        )
        return tuple(out)


def uniform_cluster(
    gpus: int, gpus_per_node: int = 8, gpu_type: str = "gpu", nodes_per_block: int = 32
) -> ClusterSpec:
    """A one-site cluster of `gpus` GPUs in blocks of `nodes_per_block` nodes (for benches)."""
    nodes = max(1, -(-gpus // gpus_per_node))
    full, rest = divmod(nodes, nodes_per_block)
    blocks = []
    if full:
        blocks.append(BlockSpec("b", nodes_per_block, gpus_per_node, gpu_type, full))
    if rest:
        blocks.append(BlockSpec("tail", rest, gpus_per_node, gpu_type, 1))
    return ClusterSpec(f"uniform-{gpus}", (SiteSpec("site", tuple(blocks)),))


def _get(d: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in d:
        raise ClusterSpecError(f"{where}: missing key {key!r}")
    v = d[key]
    if kind is int and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
        raise ClusterSpecError(f"{where}.{key}: must be a whole number >= 1, got {v!r}")
    if kind is str and (not isinstance(v, str) or not v):
        raise ClusterSpecError(f"{where}.{key}: must be a non-empty string, got {v!r}")
    if kind is list and (not isinstance(v, list) or not v):
        raise ClusterSpecError(f"{where}.{key}: must be a non-empty list")
    return v


def parse_cluster(data: object, source: str = "<spec>") -> ClusterSpec:
    """A `ClusterSpec` from parsed YAML; raises ClusterSpecError naming the bad key."""
    if not isinstance(data, dict):
        raise ClusterSpecError(f"{source}: the top level must be a mapping")
    name = _get(data, "name", str, source)
    sites: list[SiteSpec] = []
    seen: set[str] = set()
    for i, s in enumerate(_get(data, "sites", list, source)):
        where = f"{source}: sites[{i}]"
        if not isinstance(s, dict):
            raise ClusterSpecError(f"{where}: must be a mapping")
        sname = _get(s, "name", str, where)
        if sname in seen:
            raise ClusterSpecError(f"{where}.name: site {sname!r} appears twice")
        seen.add(sname)
        blocks: list[BlockSpec] = []
        for j, b in enumerate(_get(s, "blocks", list, where)):
            bw = f"{where}.blocks[{j}]"
            if not isinstance(b, dict):
                raise ClusterSpecError(f"{bw}: must be a mapping")
            blocks.append(
                BlockSpec(
                    name=_get(b, "name", str, bw),
                    nodes=_get(b, "nodes", int, bw),
                    gpus_per_node=_get(b, "gpus_per_node", int, bw),
                    gpu_type=_get(b, "gpu_type", str, bw),
                    count=_get(b, "count", int, bw) if "count" in b else 1,
                )
            )
        sites.append(SiteSpec(sname, tuple(blocks)))
    shares: dict[str, float] = {}
    policy = data.get("policy") or {}
    if not isinstance(policy, dict):
        raise ClusterSpecError(f"{source}: policy must be a mapping")
    raw = policy.get("shares") or {}
    if not isinstance(raw, dict):
        raise ClusterSpecError(f"{source}: policy.shares must be a mapping")
    for k, v in raw.items():
        if not isinstance(v, int | float) or v < 0:
            raise ClusterSpecError(f"{source}: policy.shares.{k} must be a number >= 0")
        shares[str(k)] = float(v)
    return ClusterSpec(name, tuple(sites), shares)


def load_cluster(path: str | Path) -> ClusterSpec:
    """Read and validate a cluster YAML file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClusterSpecError(f"{p}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ClusterSpecError(f"{p}: not valid YAML: {exc}") from None
    return parse_cluster(data, str(p))
