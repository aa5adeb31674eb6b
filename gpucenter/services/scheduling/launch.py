"""A starting job's `LaunchRequest`, built in one place from its row.

The request carries the whole job (shape, owner, project, account, QOS, name, ...) so that no
dispatcher reads the database or reconstructs the job from its placement; every site kind
gets the same request for the same job. The owner is named by user name and, where
gpucenter provisioned an account for them (a multi-tenant local site), by its uid and gid,
which the local dispatcher checks against the machine before it runs anything as them.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.core import NodeGpus
from gpucenter.dispatch.base import JobOwner, LaunchRequest
from gpucenter.domain.ids import JobId, ProjectId
from gpucenter.domain.jobs import GpuRequest
from gpucenter.domain.sessions import TOKEN_VARIABLE, kind_of_template
from gpucenter.persistence.tables import JobRow, ProjectRow, UserRow
from gpucenter.services.sessions.secret import session_token

__all__ = ["launch_request", "launch_requests"]


def launch_request(
    row: JobRow,
    project: str,
    owner: JobOwner,
    placement: tuple[NodeGpus, ...],
    session_key: bytes | None = None,
) -> LaunchRequest:
    """The request for the next run of the job in `row`, of `project`, on `placement`.

    An interactive session's job gets its secret in its environment here, at launch, so that
    it is never stored with the job (see `services.sessions.secret`)."""
    env = dict(row.env or {})
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
    )


def launch_requests(
    s: Session,
    placements: Mapping[JobId, tuple[NodeGpus, ...]],
    session_key: bytes | None = None,
) -> dict[JobId, LaunchRequest]:
    """The requests of the jobs about to start, by one query (jobs no longer there are
    left out)."""
    if not placements:
        return {}
    rows = s.execute(
        select(JobRow, ProjectRow.name, UserRow.username, UserRow.unix_uid, UserRow.unix_gid)
        .join(ProjectRow, ProjectRow.id == JobRow.project_id)
        .join(UserRow, UserRow.id == JobRow.user_id)
        .where(JobRow.id.in_(sorted(int(job_id) for job_id in placements)))
    )
    return {
        JobId(row.id): launch_request(
            row, project, JobOwner(username, uid, gid), placements[JobId(row.id)], session_key
        )
        for row, project, username, uid, gid in rows
    }
