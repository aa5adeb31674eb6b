"""A job as the API, the portal and the CLI read it: a frozen copy made inside the services.

Why: a row is a live ORM object; handed to a route or a template it carries the database
with it (lazy loads, flushes, columns nobody outside should read, such as log paths and
idempotency keys). The services copy what readers need into a `JobView` before the
transaction ends, and everything above them reads only that. Field names are the row's, so
templates and the API's schema read the same attributes as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

from gpucenter.domain.messages import Message
from gpucenter.persistence.sealed_env import masked
from gpucenter.persistence.tables import JobRow


@dataclass(frozen=True, slots=True)
class JobView:
    """One job (or one task of an array) as it stands."""

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
    after_ok: tuple[int, ...]
    priority: float | None
    priority_factors: dict[str, float] | None
    submitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    exit_code: int | None
    placement: list[dict[str, Any]] | None
    # `reason_detail` as a code with parameters, for readers in another language or zone;
    # None when the detail was written in English only.
    reason_message: Message | None = None
    # The job's environment: names with their values masked (`sealed_env.MASK`), except in
    # the view its owner asks for (`manage.get_visible`), where the values are opened.
    env: dict[str, str] = field(default_factory=dict)


def reason_message_of(stored: object, detail: str) -> Message | None:
    """The stored message, if it still says what `reason_detail` says: a writer that sets
    only the English detail (an older one, or one outside the scheduler) leaves a stale
    message behind, and readers must then fall back to the detail rather than show it."""
    if not stored or not detail:
        return None
    message = Message.from_json(stored)
    if message is None or message.english() != detail:
        return None
    return message


# What a submission answers with today: the row it wrote (`jobs.submit`, the fast path) or a
# view. Readers convert with `job_view`, which takes either.
AnyJob: TypeAlias = JobRow | JobView


def job_view(job: AnyJob, env: dict[str, str] | None = None) -> JobView:
    """The view of `job` (a view is returned as it is). Its env's values are masked unless
    `env` (opened for the job's owner) is given."""
    if isinstance(job, JobView):
        return job
    return JobView(
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
        after_ok=tuple(job.after_ok or ()),
        priority=job.priority,
        priority_factors=job.priority_factors,
        submitted_at=job.submitted_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        exit_code=job.exit_code,
        placement=job.placement,
        reason_message=reason_message_of(getattr(job, "reason_message", None), job.reason_detail),
        env=env if env is not None else masked(job.env),
    )


__all__ = ["AnyJob", "JobView", "job_view", "reason_message_of"]
