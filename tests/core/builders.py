"""Small builders for scheduling tests: `cluster().nodes(4).busy("n0", 4).snapshot()`."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpucenter.core import (
    ClusterSnapshot,
    NodeGpus,
    NodeSnapshot,
    PendingJob,
    RunningJob,
)
from gpucenter.domain.ids import JobId, ProjectId, UserId
from gpucenter.domain.jobs import GpuRequest

T0 = 1_000_000.0


@dataclass
class ClusterBuilder:
    node_list: list[NodeSnapshot] = field(default_factory=list)
    running: list[RunningJob] = field(default_factory=list)
    next_job: int = 10_000

    def nodes(
        self,
        count: int,
        gpus: int = 8,
        gpu_type: str = "h100",
        *,
        prefix: str = "n",
        block_size: int | None = None,
        block: str = "b0",
        site: str = "default",
        nvlink: int | None = None,
    ) -> ClusterBuilder:
        start = len([n for n in self.node_list if n.name.startswith(prefix)])
        for i in range(start, start + count):
            blk = f"{prefix}b{i // block_size}" if block_size else block
            dom = f"{prefix}d{i // nvlink}" if nvlink else None
            self.node_list.append(NodeSnapshot(f"{prefix}{i}", gpu_type, gpus, blk, site, dom))
        return self

    def busy(
        self,
        node: str | list[str],
        gpus: int | None = None,
        *,
        job: int | None = None,
        project: int = 99,
        started: float = T0 - 100,
        limit: int = 3600,
        qos: str = "normal",
        borrowed: bool = False,
        requeue_at: float | None = None,
    ) -> ClusterBuilder:
        names = [node] if isinstance(node, str) else node
        parts = []
        for name in names:
            size = next(n.gpu_count for n in self.node_list if n.name == name)
            used = {g for r in self.running for p in r.placement if p.node == name for g in p.gpus}
            free = [g for g in range(size) if g not in used]
            take = free if gpus is None else free[:gpus]
            parts.append(NodeGpus(name, tuple(take)))
        if job is None:
            job = self.next_job
            self.next_job += 1
        self.running.append(
            RunningJob(
                JobId(job),
                ProjectId(project),
                tuple(parts),
                started,
                limit,
                qos=qos,
                borrowed=borrowed,
                requeue_at=requeue_at,
            )
        )
        return self

    def snapshot(self) -> ClusterSnapshot:
        return ClusterSnapshot(tuple(self.node_list), tuple(self.running))


def cluster() -> ClusterBuilder:
    return ClusterBuilder()


def job(
    job_id: int,
    gpus: int = 1,
    nodes: int = 1,
    gpu_type: str = "h100",
    *,
    project: int = 1,
    limit: int = 3600,
    submitted: float = T0 - 10,
    budget: float | None = None,
    qos: str = "normal",
    user: int | None = None,
    alternatives: tuple[str, ...] = (),
    max_blocks: int | None = None,
) -> PendingJob:
    return PendingJob(
        JobId(job_id),
        ProjectId(project),
        GpuRequest(gpu_type, gpus, nodes, alternatives),
        limit,
        submitted,
        budget,
        qos=qos,
        user_id=UserId(user) if user is not None else None,
        max_blocks=max_blocks,
    )
