"""Request and response bodies of the REST API, with size and range limits on every input."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gpucenter.domain.messages import Message
from gpucenter.services.jobs.views import JobView
from gpucenter.services.scheduling.pending import PendingExplanation


class JobIn(BaseModel):
    """A submission. Give `command` or `script` (whose #GPUCENTER lines set options), or a
    `template` with its `fields`. Fields left out take the script's, then the template's,
    then the defaults (1 GPU, 1 node, 1 hour, QoS normal)."""

    model_config = ConfigDict(extra="forbid")

    project: str | None = Field(default=None, min_length=1, max_length=100)
    command: str | None = Field(default=None, max_length=65536, description="run by bash -c")
    script: str | None = Field(default=None, max_length=262144)
    gpus_per_node: int | None = Field(default=None, description="GPUs on each node")
    nodes: int | None = None
    gpu_type: str | None = Field(default=None, max_length=40)
    time_limit_s: int | None = None
    time: str | None = Field(default=None, max_length=32, description="90, 30m, 2h, 1:30:00")
    name: str | None = Field(default=None, max_length=200)
    workdir: str | None = Field(default=None, max_length=4096)
    env: dict[str, str] | None = Field(default=None, max_length=200)
    qos: str | None = Field(default=None, max_length=40)
    image: str | None = Field(default=None, max_length=500)
    array: str | None = Field(default=None, max_length=200, description="0-9, 1,3,5, 0-20:5")
    after_ok: list[int] | None = Field(default=None, max_length=100)
    template: str | None = Field(default=None, max_length=64)
    fields: dict[str, str | int] | None = Field(default=None, max_length=50)


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
    qos: str
    image: str | None
    template: str | None
    array_job_id: int | None
    array_index: int | None
    array_task_ids: list[int] | None = None
    after_ok: list[int]
    priority: float | None
    priority_factors: dict[str, float] | None
    submitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    placement: list[dict[str, Any]] | None
    reason_message: dict[str, Any] | None = Field(
        default=None,
        description="reason_detail as {code, params}, to be said in the reader's language; "
        "null when the detail exists in English only",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="the job's environment: values shown to the job's owner only, masked "
        "(********) for everyone else",
    )

    @classmethod
    def of(cls, job: JobView, array_task_ids: list[int] | None = None) -> JobOut:
        return cls(
            id=job.id,
            name=job.name,
            project_id=job.project_id,
            user_id=job.user_id,
            state=job.state,
            reason=job.reason,
            reason_detail=job.reason_detail,
            command=job.command,
            gpu_type=job.gpu_type,
            gpus_per_node=job.gpus_per_node,
            nodes=job.nodes,
            time_limit_s=job.time_limit_s,
            qos=job.qos,
            image=job.image,
            template=job.template,
            array_job_id=job.array_job_id,
            array_index=job.array_index,
            array_task_ids=array_task_ids,
            after_ok=list(job.after_ok or []),
            priority=job.priority,
            priority_factors=job.priority_factors,
            submitted_at=job.submitted_at,
            started_at=job.started_at,
            ended_at=job.ended_at,
            exit_code=job.exit_code,
            placement=job.placement,
            reason_message=job.reason_message.to_json() if job.reason_message else None,
            env=dict(job.env),
        )


class MessageOut(BaseModel):
    """A sentence for people: `text` in English, `code` and `params` to say it in another
    language (instants are {"at": seconds since the epoch})."""

    code: str
    params: dict[str, Any]
    text: str

    @classmethod
    def of(cls, message: Message) -> MessageOut:
        data = message.to_json()
        return cls(code=data["code"], params=data["params"], text=message.english())


class SuggestionOut(MessageOut):
    kind: str = Field(description="gpus, gpu_type, time_limit, top_up or dependency")
    value: int | str | None


class PendingOut(BaseModel):
    """Why a pending job waits, where it stands and what would start it sooner."""

    job_id: int
    reason: str
    sentence: MessageOut
    detail: MessageOut | None
    position: int = Field(description="1-based, among pending jobs of the same GPU type")
    waiting: int
    gpu_type: str
    expected_start: datetime | None
    sooner: list[SuggestionOut]

    @classmethod
    def of(cls, view: PendingExplanation) -> PendingOut:
        return cls(
            job_id=view.job_id,
            reason=view.reason,
            sentence=MessageOut.of(view.sentence),
            detail=MessageOut.of(view.detail) if view.detail else None,
            position=view.position,
            waiting=view.waiting,
            gpu_type=view.gpu_type,
            expected_start=view.expected_start,
            sooner=[
                SuggestionOut(kind=x.kind, value=x.value, **MessageOut.of(x.message).model_dump())
                for x in view.sooner
            ],
        )


class JobPageOut(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")


class TemplateFieldOut(BaseModel):
    name: str
    type: str
    label: str
    required: bool
    default: str | int | None
    minimum: int | None
    maximum: int | None
    choices: list[str]


class TemplateOut(BaseModel):
    name: str
    title: str
    description: str
    fields: list[TemplateFieldOut]
    job: dict[str, str]


class UsageRowOut(BaseModel):
    project: str
    username: str
    gpu_type: str
    jobs: int
    gpu_hours: float


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    code: str | None = Field(
        default=None, max_length=10, description="TOTP code, where the second factor is on"
    )


class TokenOut(BaseModel):
    token: str


class PasswordChangeIn(BaseModel):
    """Your own new password: at least 12 characters, not a common one, not your username."""

    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


class UserIn(BaseModel):
    """A new user with a password under the policy (at least 12 characters, not a common
    one, not the username)."""

    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    organisation: str | None = Field(default=None, min_length=1, max_length=200)
    display_name: str = Field(default="", max_length=200)


class UserOut(BaseModel):
    id: int
    username: str
    display_name: str
    organisation_id: int | None
    is_admin: bool
    created_at: datetime


class AllocationOut(BaseModel):
    id: int
    gpu_hours: float
    used_gpu_hours: float
    remaining_gpu_hours: float
    starts_at: datetime
    ends_at: datetime
    burn_rate_gpu_hours_per_day: float = Field(description="average over the last 7 days")
    projected_exhaustion: datetime | None = Field(
        description="when the budget runs out at the current burn rate; null if it will not"
    )


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
    roles: list[str] = Field(default_factory=list, description="role, or role@programme_id")
    scopes: list[str] | None = Field(default=None, description="null: not a scoped token")


# Ids in paths and queries: database integers, so anything past 2^31 is simply not found.
MAX_ID = 2**31 - 1


class TokenIn(BaseModel):
    """A new API token: a name to recognise it by, its scopes and how long it lives."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=100)
    scopes: list[str] = Field(min_length=1, max_length=32, description="e.g. ['jobs:read']")
    days: int = Field(default=30, ge=1, le=3660)


class TokenInfoOut(BaseModel):
    """A token as listed: everything but the secret, which is shown only when it is made."""

    id: int
    name: str
    scopes: list[str] | None = Field(description="null: every permission of its owner")
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewTokenOut(TokenInfoOut):
    token: str = Field(description="the secret: shown this once, stored only hashed")


class CodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=6, max_length=10, pattern=r"^[0-9 ]+$")


class TotpSetupOut(BaseModel):
    secret: str
    uri: str = Field(description="otpauth:// URI for an authenticator app")


class RoleGrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    role: str = Field(min_length=1, max_length=40)


class RoleOut(BaseModel):
    username: str
    role: str


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any]


class AuditVerifyOut(BaseModel):
    ok: bool
    entries: int
    broken_at: int | None
    problem: str
