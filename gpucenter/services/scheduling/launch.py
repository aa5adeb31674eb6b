"""A starting job's `LaunchRequest`, built in one place from its row.

The request carries the whole job (shape, owner, project, account, QOS, name, ...) so that no
dispatcher reads the database or reconstructs the job from its placement; every site kind
gets the same request for the same job. The owner is named by user name and, where
gpucenter provisioned an account for them (a multi-tenant local site), by its uid and gid,
which the local dispatcher checks against the machine before it runs anything as them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.core import NodeGpus
from gpucenter.dispatch.base import JobOwner, LaunchRequest
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import GpuRequest, JobState
from gpucenter.domain.messages import msg
from gpucenter.domain.sessions import TOKEN_VARIABLE, kind_of_template
from gpucenter.persistence.sealed_env import EnvKeys, SealError, keys_for, open_env
from gpucenter.persistence.tables import JobRow, ProjectRow, UserRow
from gpucenter.services.sessions.secret import session_token

log = logging.getLogger(__name__)

__all__ = ["launch_request", "launch_requests"]


def launch_request(
    row: JobRow,
    project: str,
    owner: JobOwner,
    placement: tuple[NodeGpus, ...],
    keys: EnvKeys | None = None,
    share_outputs: bool = False,
    session_key: bytes | None = None,
) -> LaunchRequest:
    """The request for the next run of the job in `row`, of `project`, on `placement`.
    Its env is opened here, for the dispatcher only (SealError where it cannot be).

    An interactive session's job gets its secret in its environment here, at launch, so that
    it is never stored with the job (see `services.sessions.secret`)."""
    env = open_env(keys or keys_for(None), row.user_id, row.env)
    if session_key is not None and kind_of_template(row.template) is not None:
        env[TOKEN_VARIABLE] = session_token(session_key, row.id)
    return LaunchRequest(
        job_id=JobId(row.id),
        command=row.command,
        gpu=GpuRequest(row.gpu_type, row.gpus_per_node, row.nodes),
        placement=placement,
        time_limit_s=row.time_limit_s,
        owner=owner,
        project_id=ProjectId(row.project_id),
        project=project,
        name=row.name,
        qos=row.qos,
        workdir=row.workdir,
        env=env,
        image=row.image,
        array_index=row.array_index,
        run=(row.runs or 0) + 1,
        share_outputs=share_outputs,
    )


def launch_requests(
    s: Session,
    placements: Mapping[JobId, tuple[NodeGpus, ...]],
    now: datetime | None = None,
    session_key: bytes | None = None,
) -> dict[JobId, LaunchRequest]:
    """The requests of the jobs about to start, by one query (jobs no longer there, and
    jobs whose env cannot be opened, which fail here, are left out)."""
    if not placements:
        return {}
    rows = s.execute(
        select(
            JobRow,
            ProjectRow.name,
            ProjectRow.share_outputs,
            UserRow.username,
            UserRow.unix_uid,
            UserRow.unix_gid,
        )
        .join(ProjectRow, ProjectRow.id == JobRow.project_id)
        .join(UserRow, UserRow.id == JobRow.user_id)
        .where(JobRow.id.in_(sorted(int(job_id) for job_id in placements)))
    )
    keys = keys_for(s.info)
    requests: dict[JobId, LaunchRequest] = {}
    for row, project, shared, username, uid, gid in rows:
        owner = JobOwner(username, uid, gid)
        try:
            requests[JobId(row.id)] = launch_request(
                row,
                project,
                owner,
                placements[JobId(row.id)],
                keys,
                bool(shared),
                session_key,
            )
        except SealError as exc:
            # Fail closed: a job whose secrets cannot be opened (tampered with, copied from
            # another job, sealed under a key this server lacks) never runs; it fails
            # alone, saying why, and the pass goes on with the others.
            log.warning("job %s: its environment cannot be opened: %s", row.id, exc)
            why = msg("job.env_unreadable", why=str(exc))
            row.state = JobState.FAILED.value
            row.ended_at = now or datetime.now(tz=UTC)
            row.reason = ""
            row.reason_detail, row.reason_message = why.english(), why.to_json()
    return requests
