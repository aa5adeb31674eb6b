"""Small builders for dispatcher tests: a whole `LaunchRequest` from the few fields a test
cares about (the rest are plausible defaults)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gpucenter.core.model import NodeGpus
from gpucenter.dispatch.base import JobOwner, LaunchRequest
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import GpuRequest


def launch_request(
    job_id: int,
    command: str = "true",
    *,
    placement: Sequence[NodeGpus] = (NodeGpus("local", (0,)),),
    gpu_type: str = "h100",
    time_limit_s: int = 60,
    workdir: str | None = None,
    env: Mapping[str, str] | None = None,
    owner: JobOwner = JobOwner("alice"),
    project: str = "alpha",
    name: str = "",
    qos: str = "normal",
    image: str | None = None,
    run: int = 1,
) -> LaunchRequest:
    """A request whose GPU shape matches its placement (GPUs of the first node x nodes; at
    least one GPU, as a job always asks for one, even where a test places it on none)."""
    return LaunchRequest(
        job_id=JobId(job_id),
        command=command,
        gpu=GpuRequest(gpu_type, max(1, len(placement[0].gpus)), len(placement)),
        placement=tuple(placement),
        time_limit_s=time_limit_s,
        owner=owner,
        project_id=ProjectId(1),
        project=project,
        name=name,
        qos=qos,
        workdir=workdir,
        env=dict(env or {}),
        image=image,
        run=run,
    )
