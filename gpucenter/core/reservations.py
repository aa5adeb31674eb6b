"""Advance reservations: GPUs set aside for given projects over a time window.

Two kinds share one type: a programme reservation (4,096 GPUs for 30 days for the foundation
model) and a lease (a startup's 32 GPUs for 14 days). Before the window, anyone may use the
nodes for a job that ends by the window's start. Inside the window only member projects run
there as entitled work; a lease additionally lends idle GPUs to others as preemptible work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpucenter.core.model import NodeSnapshot
from gpucenter.domain.clock import Instant
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.ids import ProjectId
from gpucenter.domain.messages import msg


@dataclass(frozen=True, slots=True)
class AdvanceReservation:
    name: str
    nodes: tuple[str, ...]
    projects: frozenset[ProjectId]
    start: Instant
    end: Instant
    lease: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValidationError.about("reservation.name", msg("error.not_empty"))
        if self.end <= self.start:
            raise ValidationError.about("reservation.end", msg("error.end_after_start"))
        if not self.nodes:
            raise ValidationError.about("reservation.nodes", msg("error.name_a_node"))

    def active(self, now: Instant) -> bool:
        return self.start <= now < self.end


def choose_nodes(
    nodes: Sequence[NodeSnapshot],
    gpu_type: str,
    gpus: int,
    taken: Sequence[str] = (),
) -> tuple[str, ...]:
    """Pick whole nodes of `gpu_type` adding up to at least `gpus`, whole blocks first.

    Filling whole blocks keeps a big training reservation on as few leaf switches as possible.
    Deterministic: blocks by (fewest nodes that still cover the rest, name), nodes by name.
    Raises ValidationError if the type has too few GPUs outside `taken`.
    """
    excluded = set(taken)
    by_block: dict[tuple[str, str], list[NodeSnapshot]] = {}
    for n in nodes:
        if n.gpu_type == gpu_type and n.gpu_count > 0 and n.name not in excluded:
            by_block.setdefault((n.site, n.block), []).append(n)
    for members in by_block.values():
        members.sort(key=lambda n: n.name)
    chosen: list[str] = []
    need = gpus
    blocks = sorted(by_block.items(), key=lambda kv: (-sum(n.gpu_count for n in kv[1]), kv[0]))
    for _, members in blocks:
        if need <= 0:
            break
        for n in members:
            if need <= 0:
                break
            chosen.append(n.name)
            need -= n.gpu_count
    if need > 0:
        raise ValidationError.about(
            "gpus", msg("error.reserve_too_many", count=gpus - need, gpu_type=gpu_type)
        )
    return tuple(chosen)
