"""Site descriptions: YAML to a domain Site, with detected or virtual GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpucenter.dispatch.gpus import DetectedGpu
from gpucenter.domain.errors import ValidationError
from gpucenter.services.sites.config import load_site, parse_site


def _none() -> list[DetectedGpu]:
    return []


def _two_h100() -> list[DetectedGpu]:
    return [
        DetectedGpu(index=0, name="NVIDIA H100 80GB HBM3", memory_mib=81559, uuid="GPU-a"),
        DetectedGpu(index=1, name="NVIDIA H100 80GB HBM3", memory_mib=81559, uuid="GPU-b"),
    ]


def test_the_demo_site_gets_virtual_gpus_without_nvidia_hardware() -> None:
    loaded = load_site(None, detect=_none)
    (node,) = loaded.site.nodes
    assert (node.gpu_type, node.gpu_count) == ("vgpu", 4)
    assert loaded.virtual_nodes == frozenset({"local"})


def test_detected_gpus_replace_virtual_ones_and_keep_their_device_indices() -> None:
    loaded = load_site(None, detect=_two_h100)
    (node,) = loaded.site.nodes
    assert (node.gpu_type, node.gpu_count) == ("h100", 2)
    assert loaded.gpu_index_map["local"] == [0, 1]
    assert loaded.virtual_nodes == frozenset()


def test_a_multi_node_site_file(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        "site: lab\nnodes:\n"
        "  - {name: a1, gpus: 8, gpu_type: H100, block: leaf1}\n"
        "  - {name: a2, gpus: 8, gpu_type: h100, block: leaf1}\n"
        "  - {name: b1, gpus: 4, gpu_type: rngd, block: leaf2}\n"
    )
    site = load_site(path, detect=_none).site
    assert site.name == "lab"
    assert site.total_gpus == 20
    assert site.gpu_types == frozenset({"h100", "rngd"})
    assert site.max_gpus_per_node("rngd") == 4


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("not: [valid", "site_file"),
        ("site: x\n", "site_file"),
        ("nodes:\n  - {gpus: 2, gpu_type: h100}\n", "nodes[0]"),
        ("nodes:\n  - {name: a, gpus: 0, gpu_type: h100}\n", "nodes[0].gpus"),
        ("nodes:\n  - {name: a, gpus: 2}\n", "nodes[0].gpu_type"),
        (
            "nodes:\n  - {name: a, gpus: 2, gpu_type: h100}\n"
            "  - {name: a, gpus: 1, gpu_type: h100}\n",
            "site.nodes",
        ),
    ],
)
def test_bad_site_files_name_the_problem(tmp_path: Path, data: str, field: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(data)
    with pytest.raises(ValidationError) as info:
        load_site(path, detect=_none)
    assert info.value.field == field


def test_parse_rejects_non_mapping() -> None:
    with pytest.raises(ValidationError):
        parse_site(["a"], _none)
