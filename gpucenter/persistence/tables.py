"""The relational schema. Alembic migrations under migrations/ create exactly these tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _ts() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False)


class OrganisationRow(Base):
    __tablename__ = "organisations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(40), nullable=False)
    created_at: Mapped[datetime] = _ts()


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    display_name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = _ts()
    # The Unix account gpucenter provisioned for the user on a multi-tenant local site: what
    # a launch request names as the owner (checked against the machine before a job runs).
    unix_uid: Mapped[int | None] = mapped_column(Integer)
    unix_gid: Mapped[int | None] = mapped_column(Integer)


class ApiTokenRow(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, default="")
    token_hash: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    created_at: Mapped[datetime] = _ts()
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ProjectRow(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    title: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), nullable=False)
    created_at: Mapped[datetime] = _ts()
    # New jobs' outputs readable by the project's Unix group, and their logs by its members
    # (migration 0019): set by the project's PI, audited. Off: the owner's alone.
    share_outputs: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )


class MembershipRow(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("project_id", "user_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), nullable=False)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    role: Mapped[str] = mapped_column(String(20), nullable=False, default="member")


class AllocationRow(Base):
    __tablename__ = "allocations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), nullable=False, index=True)
    gpu_seconds: Mapped[int] = mapped_column(BigInteger, nullable=False)
    starts_at: Mapped[datetime] = _ts()
    ends_at: Mapped[datetime] = _ts()
    created_at: Mapped[datetime] = _ts()
    # From programme awards (migration 0005): the GPU type and concurrency the award covers
    # (None: any type, no limit), its state, and the award it came from.
    gpu_type: Mapped[str | None] = mapped_column(String(40))
    max_concurrent_gpus: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(
        String(20), nullable=False, default="active", server_default="active"
    )
    award_id: Mapped[int | None] = mapped_column(Integer, index=True)


class SiteRow(Base):
    __tablename__ = "sites"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False, default="local")


class NodeRow(Base):
    __tablename__ = "nodes"
    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    gpu_type: Mapped[str] = mapped_column(String(40), nullable=False)
    gpu_count: Mapped[int] = mapped_column(Integer, nullable=False)
    block: Mapped[str] = mapped_column(String(100), nullable=False, default="default")
    virtual: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key"),
        # A project's jobs newest first, whole or by state (migration 0011): the job list
        # pages by id within a project without sorting its 100,000 jobs.
        Index("ix_jobs_project_id_id", "project_id", "id"),
        Index("ix_jobs_project_id_state_id", "project_id", "state", "id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), nullable=False)
    allocation_id: Mapped[int | None] = mapped_column(ForeignKey("allocations.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False, index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    command: Mapped[str] = mapped_column(Text, nullable=False)
    gpu_type: Mapped[str] = mapped_column(String(40), nullable=False)
    gpus_per_node: Mapped[int] = mapped_column(Integer, nullable=False)
    nodes: Mapped[int] = mapped_column(Integer, nullable=False)
    time_limit_s: Mapped[int] = mapped_column(Integer, nullable=False)
    workdir: Mapped[str | None] = mapped_column(Text)
    env: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    state: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    reason: Mapped[str] = mapped_column(String(40), nullable=False, default="")
    reason_detail: Mapped[str] = mapped_column(Text, nullable=False, default="")
    # The same reason as a message code with parameters (migration 0016); trusted by readers
    # only while its English rendering equals `reason_detail`.
    reason_message: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    submitted_at: Mapped[datetime] = _ts()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    external_id: Mapped[str | None] = mapped_column(String(100))
    placement: Mapped[list[Any] | None] = mapped_column(JSON)
    stdout_path: Mapped[str | None] = mapped_column(Text)
    stderr_path: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    qos: Mapped[str] = mapped_column(String(40), nullable=False, server_default="normal")
    image: Mapped[str | None] = mapped_column(Text)
    template: Mapped[str | None] = mapped_column(String(64))
    array_job_id: Mapped[int | None] = mapped_column(Integer, index=True)
    array_index: Mapped[int | None] = mapped_column(Integer)
    after_ok: Mapped[list[int]] = mapped_column(
        JSON, nullable=False, default=list, server_default="[]"
    )
    priority: Mapped[float | None] = mapped_column(Float)
    priority_factors: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    runs: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    borrowed: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    preempt_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    preempted_for: Mapped[int | None] = mapped_column(Integer)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the run's start reserved against its allocation (migration 0013): the time limit
    # the site it went to enforces (Slurm: whole minutes plus its grace), in seconds. The
    # charge of the run never exceeds it. None: reserved its own time limit (older rows).
    reserved_s: Mapped[int | None] = mapped_column(Integer)


class LedgerEntryRow(Base):
    """Append-only: a charge is written once per source record and never updated."""

    __tablename__ = "ledger_entries"
    __table_args__ = (UniqueConstraint("source"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    allocation_id: Mapped[int] = mapped_column(
        ForeignKey("allocations.id"), nullable=False, index=True
    )
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    source: Mapped[str] = mapped_column(String(200), nullable=False)
    gpu_type: Mapped[str] = mapped_column(String(40), nullable=False)
    gpu_seconds: Mapped[float] = mapped_column(Float, nullable=False)
    created_at: Mapped[datetime] = _ts()


class JobTemplateRow(Base):
    """A published job template; `body` is the validated definition (see domain.templates)."""

    __tablename__ = "job_templates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    body: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    published_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = _ts()
    updated_at: Mapped[datetime] = _ts()


class JobRunRow(Base):
    """One run of a job as its site knows it: which site job id that run was (migration 0021).

    Why: a job's row keeps only its current run's site id (`JobRow.external_id`); a preempted
    and requeued job's earlier runs are otherwise known to the Slurm usage ingest only by the
    marker in their comment, which the job's owner can copy into a Slurm job of their own and
    so run it uncharged. With each run's site id recorded, an earlier run is recognised by
    its id, and a copied marker is an outside submission."""

    __tablename__ = "job_runs"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    run: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    external_id: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime] = _ts()


class SessionShareRow(Base):
    """A project member the owner of an interactive session lets use it (migration 0018).

    The session is its job (`job_id`); the owner needs no row. Only members of the job's
    project may be added, and a member who leaves the project loses access with the membership
    (checked on every request, not only here)."""

    __tablename__ = "session_shares"
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    created_at: Mapped[datetime] = _ts()
