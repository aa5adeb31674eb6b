"""Sites, network blocks, nodes and GPU types, as an operator describes them."""

from __future__ import annotations

from dataclasses import dataclass

from gpucenter.domain.errors import ValidationError
from gpucenter.domain.jobs import GpuRequest
from gpucenter.domain.messages import msg


@dataclass(frozen=True, slots=True)
class Node:
    """One machine with `gpu_count` GPUs of one type, under a leaf switch (`block`)."""

    name: str
    gpu_type: str
    gpu_count: int
    block: str = "default"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValidationError.about("node.name", msg("error.not_empty"))
        if self.gpu_count < 0:
            raise ValidationError.about("node.gpu_count", msg("error.not_negative"))


@dataclass(frozen=True, slots=True)
class Site:
    """A cluster gpucenter dispatches to, with its nodes."""

    name: str
    nodes: tuple[Node, ...]

    def __post_init__(self) -> None:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValidationError.about("site.nodes", msg("error.node_names_unique"))

    @property
    def gpu_types(self) -> frozenset[str]:
        return frozenset(n.gpu_type for n in self.nodes if n.gpu_count > 0)

    def max_gpus_per_node(self, gpu_type: str) -> int:
        return max((n.gpu_count for n in self.nodes if n.gpu_type == gpu_type), default=0)

    def nodes_of_type(self, gpu_type: str) -> int:
        return sum(1 for n in self.nodes if n.gpu_type == gpu_type and n.gpu_count > 0)

    @property
    def total_gpus(self) -> int:
        return sum(n.gpu_count for n in self.nodes)

    def check_request(self, request: GpuRequest) -> None:
        """Raise if no state of this site could ever run `request`: the error names the field."""
        known = self.gpu_types
        for gpu_type in request.acceptable_types:
            if gpu_type not in known:
                raise ValidationError.about(
                    "gpu_type",
                    msg(
                        "error.unknown_gpu_type",
                        gpu_type=repr(gpu_type),
                        types=", ".join(sorted(known)),
                    ),
                )
        fits_somewhere = False
        for gpu_type in request.acceptable_types:
            largest = self.max_gpus_per_node(gpu_type)
            if request.gpus_per_node <= largest:
                if request.nodes <= self.nodes_of_type(gpu_type):
                    fits_somewhere = True
                    break
                raise ValidationError.about(
                    "nodes",
                    msg(
                        "error.too_many_nodes",
                        nodes=request.nodes,
                        most=self.nodes_of_type(gpu_type),
                        gpu_type=gpu_type,
                    ),
                )
        if not fits_somewhere:
            largest = max(self.max_gpus_per_node(t) for t in request.acceptable_types)
            raise ValidationError.about(
                "gpus_per_node",
                msg(
                    "error.too_many_gpus",
                    gpus=request.gpus_per_node,
                    gpu_type=request.gpu_type,
                    most=largest,
                ),
            )
