"""Reading a site description (YAML) into a domain Site, detecting real GPUs where asked."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gpucenter.dispatch.gpus import DetectedGpu, detect_nvidia_gpus, gpu_type_from_name
from gpucenter.domain.cluster import Node, Site
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import msg


@dataclass(frozen=True, slots=True)
class LoadedSite:
    """A site plus how its GPU slots map to physical devices (for CUDA_VISIBLE_DEVICES)."""

    site: Site
    gpu_index_map: dict[str, list[int]]
    virtual_nodes: frozenset[str]


def default_site_text() -> str:
    return resources.files("gpucenter.demo").joinpath("site.yaml").read_text()


def load_site(
    path: Path | None,
    detect: Callable[[], Sequence[DetectedGpu]] = detect_nvidia_gpus,
) -> LoadedSite:
    text = path.read_text() if path else default_site_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError.about(
            "site_file", msg("error.site_file_not_yaml", problem=str(exc))
        ) from exc
    return parse_site(data, detect)


def parse_site(data: Any, detect: Callable[[], Sequence[DetectedGpu]]) -> LoadedSite:
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise ValidationError.about("site_file", msg("error.site_file_shape"))
    name = str(data.get("site") or "local")
    nodes: list[Node] = []
    index_map: dict[str, list[int]] = {}
    virtual: set[str] = set()
    for i, raw in enumerate(data["nodes"]):
        if not isinstance(raw, dict) or "name" not in raw:
            raise ValidationError.about(f"nodes[{i}]", msg("error.node_needs_name"))
        node_name = str(raw["name"])
        block = str(raw.get("block", "default"))
        gpus = raw.get("gpus", "auto")
        if gpus == "auto":
            detected = list(detect())
            if detected:
                gpu_type = str(raw.get("gpu_type") or gpu_type_from_name(detected[0].name))
                nodes.append(Node(node_name, gpu_type, len(detected), block))
                index_map[node_name] = [g.index for g in detected]
                continue
            count = _positive_int(raw.get("virtual_gpus", 4), f"nodes[{i}].virtual_gpus")
            gpu_type = str(raw.get("virtual_type") or raw.get("gpu_type") or "vgpu")
            virtual.add(node_name)
        else:
            count = _positive_int(gpus, f"nodes[{i}].gpus")
            gpu_type = str(raw.get("gpu_type") or "")
            if not gpu_type:
                raise ValidationError.about(f"nodes[{i}].gpu_type", msg("error.gpu_type_required"))
            if raw.get("devices") is not True:
                # Counted by hand: virtual, unless the operator says these are this machine's
                # devices (`devices: true`: /dev/nvidia<i> is bound into the job's sandbox).
                virtual.add(node_name)
        nodes.append(Node(node_name, gpu_type.lower(), count, block))
        index_map[node_name] = list(range(count))
    return LoadedSite(Site(name, tuple(nodes)), index_map, frozenset(virtual))


def _positive_int(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValidationError.about(field, msg("error.positive_int", got=repr(value)))
    return value


__all__ = [
    "LoadedSite",
    "load_site",
    "parse_site",
]
