"""Request and response bodies of the REST API, with size and range limits on every input."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gpucenter.persistence.tables import JobRow


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str = Field(min_length=1, max_length=100)
    command: str = Field(max_length=65536, description="run with /bin/bash -c")
    gpus_per_node: int = Field(default=1, description="GPUs on each node (at least 1)")
    nodes: int = Field(default=1)
    gpu_type: str | None = Field(default=None, max_length=40)
    time_limit_s: int = Field(default=3600)
    name: str = Field(default="", max_length=200)
    workdir: str | None = Field(default=None, max_length=4096)
    env: dict[str, str] = Field(default_factory=dict, max_length=200)


class JobOut(BaseModel):
    id: int
    name: str
    project_id: int
    user_id: int
    state: str
    reason: str
    reason_detail: str
    command: str
    gpu_type: str
    gpus_per_node: int
    nodes: int
    time_limit_s: int
    submitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    placement: list[dict[str, Any]] | None

    @classmethod
    def of(cls, row: JobRow) -> JobOut:
        return cls(
            id=row.id,
            name=row.name,
            project_id=row.project_id,
            user_id=row.user_id,
            state=row.state,
            reason=row.reason,
            reason_detail=row.reason_detail,
            command=row.command,
            gpu_type=row.gpu_type,
            gpus_per_node=row.gpus_per_node,
            nodes=row.nodes,
            time_limit_s=row.time_limit_s,
            submitted_at=row.submitted_at,
            started_at=row.started_at,
            ended_at=row.ended_at,
            exit_code=row.exit_code,
            placement=row.placement,
        )


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class TokenOut(BaseModel):
    token: str


class AllocationOut(BaseModel):
    id: int
    gpu_hours: float
    used_gpu_hours: float
    remaining_gpu_hours: float
    starts_at: datetime
    ends_at: datetime


class ProjectOut(BaseModel):
    id: int
    name: str
    title: str
    allocations: list[AllocationOut]


class NodeOut(BaseModel):
    name: str
    gpu_type: str
    gpu_count: int
    gpus_busy: int
    block: str
    virtual: bool


class SiteOut(BaseModel):
    name: str
    nodes: list[NodeOut]
    pending_jobs: int
    running_jobs: int


class MeOut(BaseModel):
    id: int
    username: str
    is_admin: bool
    project_ids: list[int]
