"""Small builders for dispatcher tests: a whole `LaunchRequest` from the few fields a test
cares about (the rest are plausible defaults)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import pytest

from gpucenter.core.model import NodeGpus
from gpucenter.dispatch.base import JobOwner, LaunchRequest
from gpucenter.dispatch.local.isolation import LocalIsolation, single_user_decision
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


_PROBLEM: list[str | None] = []


def sandbox_isolation() -> LocalIsolation:
    """Single-user, sandboxed; skips (fails in CI) where bubblewrap cannot run here."""
    from gpucenter.dispatch.isolation import SandboxPolicy, sandbox_problem

    if not _PROBLEM:
        _PROBLEM.append(sandbox_problem(SandboxPolicy()))
    if _PROBLEM[0] is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the sandboxed dispatcher tests: {_PROBLEM[0]}")
        pytest.skip(f"bubblewrap cannot run here: {_PROBLEM[0]}")
    return LocalIsolation.fixed(single_user_decision(sandboxed=True))
