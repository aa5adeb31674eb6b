"""From what a user sent (flags, a script with directives, a template) to validated jobs.

Precedence, highest first: fields given explicitly, `#GPUCENTER` directives in the script,
the template's job, then defaults. Everything is validated before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.auth.permissions import Caller, can_view_job
from gpucenter.domain.directives import parse_array, parse_directives
from gpucenter.domain.durations import parse_duration
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.jobs import GpuRequest, JobSpec, JobState
from gpucenter.domain.templates import JobTemplate, parse_template
from gpucenter.persistence.tables import JobRow, JobTemplateRow
from gpucenter.services.context import AppContext

QOS_NAMES = ("normal", "opportunistic")
DEFAULT_TIME_LIMIT_S = 3600
MAX_DEPENDENCIES = 100


@dataclass(frozen=True, slots=True)
class JobForm:
    """A submission as it arrives from the CLI, REST or the SDK. None means 'not given'."""

    project: str | None = None
    command: str | None = None
    script: str | None = None
    gpus_per_node: int | None = None
    nodes: int | None = None
    gpu_type: str | None = None
    time_limit_s: int | None = None
    time: str | None = None
    name: str | None = None
    workdir: str | None = None
    env: Mapping[str, str] | None = None
    qos: str | None = None
    image: str | None = None
    array: str | None = None
    after_ok: Sequence[int] | None = None
    template: str | None = None
    fields: Mapping[str, Any] | None = None

    def fingerprint(self) -> str:
        """A digest of the whole form (an Idempotency-Key's body check). The same JSON as
        `json.dumps(asdict(self), ...)` without asdict's deep copy (a hot path)."""
        values = {name: getattr(self, name) for name in _FORM_FIELDS}
        body = json.dumps(values, sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()


_FORM_FIELDS = tuple(f.name for f in fields(JobForm))


@dataclass(frozen=True, slots=True)
class ResolvedJob:
    """A fully validated submission: one spec, and the array indices it expands to."""

    project: str
    spec: JobSpec
    qos: str
    image: str | None
    template: str | None
    after_ok: tuple[int, ...]
    array_indices: tuple[int, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


def load_template(s: Session, name: str) -> JobTemplate:
    row = s.scalar(select(JobTemplateRow).where(JobTemplateRow.name == name))
    if row is None:
        names = s.scalars(select(JobTemplateRow.name).order_by(JobTemplateRow.name)).all()
        raise ValidationError(
            "template", f"unknown template {name!r}; published: {', '.join(names) or 'none'}"
        )
    return parse_template(row.body)


def _env_pairs(values: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in values:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationError("env", f"expected NAME=VALUE, got {pair!r}")
        env[key] = value
    return env


def _layers(template: JobTemplate | None, form: JobForm) -> dict[str, Any]:
    """Merge template, directives and explicit fields (later layers win)."""
    merged: dict[str, Any] = {}
    if template is not None:
        merged.update(template.render(form.fields or {}))
    elif form.fields:
        raise ValidationError("fields", "form fields need a template; name one with 'template'")
    if form.script is not None:
        if form.command is not None:
            raise ValidationError("script", "give either a command or a script, not both")
        directives = parse_directives(form.script)
        if "env" in directives:
            directives["env"] = _env_pairs(directives["env"])
        merged.update(directives)
        merged["command"] = form.script
    for key, value in asdict(form).items():
        if key in ("script", "template", "fields") or value is None:
            continue
        if key == "env":
            merged["env"] = {**merged.get("env", {}), **value}
        else:
            merged[key] = value
    return merged


def resolve(ctx: AppContext, s: Session, caller: Caller, form: JobForm) -> ResolvedJob:
    """Validate `form` in full, reading its template and dependencies through `s`."""
    template = load_template(s, form.template) if form.template else None
    return resolve_with(
        ctx, form, template, lambda after_ok: _check_dependencies(s, caller, after_ok)
    )


class NeedsDatabase(Exception):
    """Raised by `resolve_offline`: this form names a template or dependencies, which only
    the database can check; resolve it with `resolve` inside a transaction instead."""


def _no_dependencies(after_ok: Sequence[int]) -> None:
    if after_ok:
        raise NeedsDatabase("after_ok")


def resolve_offline(ctx: AppContext, form: JobForm) -> ResolvedJob:
    """`resolve` for a form that needs no database (no template, no dependencies): the
    same checks in the same order, so that the submission fast path gives the same answer
    (and the same first error) as the general path. Raises NeedsDatabase otherwise."""
    if form.template:
        raise NeedsDatabase("template")
    return resolve_with(ctx, form, None, _no_dependencies)


def resolve_with(
    ctx: AppContext,
    form: JobForm,
    template: JobTemplate | None,
    check_dependencies: Callable[[Sequence[int]], None],
) -> ResolvedJob:
    """The one implementation of validation; the template is given already loaded and
    `check_dependencies` checks the jobs named in after_ok (in its place in the order)."""
    merged = _layers(template, form)
    project = merged.get("project")
    if not project:
        raise ValidationError("project", "name the project to charge (-p/--project)")
    command = str(merged.get("command") or "")
    if "time_limit_s" in merged:
        time_limit = int(merged["time_limit_s"])
    elif "time" in merged:
        time_limit = parse_duration(str(merged["time"]))
    else:
        time_limit = DEFAULT_TIME_LIMIT_S
    gpu = GpuRequest(
        _resolve_gpu_type(ctx, merged.get("gpu_type")),
        int(merged.get("gpus_per_node", 1)),
        int(merged.get("nodes", 1)),
    )
    ctx.site.site.check_request(gpu)
    workdir = merged.get("workdir")
    if workdir is not None:
        if not os.path.isabs(workdir):
            raise ValidationError("workdir", "must be an absolute path")
        if not Path(workdir).is_dir():
            raise ValidationError("workdir", f"{workdir} is not an existing directory")
    qos = str(merged.get("qos", "normal"))
    if qos not in QOS_NAMES:
        raise ValidationError("qos", f"unknown QoS {qos!r}; use one of {', '.join(QOS_NAMES)}")
    image = merged.get("image")
    if image and not getattr(ctx.dispatcher, "supports_images", False):
        raise ValidationError(
            "image",
            f"site {ctx.site.site.name!r} runs jobs as plain processes and cannot start "
            "container images; leave --image out or choose a Kubernetes site",
        )
    default_name = command.strip().split()[0][:200] if command.strip() else ""
    if form.script is not None:
        default_name = "script"
    spec = JobSpec(
        name=str(merged.get("name") or default_name),
        command=command,
        gpu=gpu,
        time_limit_s=time_limit,
        workdir=workdir,
        env=dict(merged.get("env") or {}),
    )
    after_ok = tuple(int(j) for j in merged.get("after_ok") or ())
    check_dependencies(after_ok)
    array = merged.get("array")
    indices = tuple(parse_array(str(array))) if array else ()
    return ResolvedJob(
        project=str(project),
        spec=spec,
        qos=qos,
        image=str(image) if image else None,
        template=form.template,
        after_ok=after_ok,
        array_indices=indices,
        env=spec.env,
    )


def _resolve_gpu_type(ctx: AppContext, requested: object) -> str:
    if requested:
        return str(requested).strip().lower()
    types = sorted(ctx.site.site.gpu_types)
    if len(types) == 1:
        return types[0]
    raise ValidationError(
        "gpu_type", f"this site has several GPU types ({', '.join(types)}); name one"
    )


def _check_dependencies(s: Session, caller: Caller, after_ok: Sequence[int]) -> None:
    if len(after_ok) > MAX_DEPENDENCIES:
        raise ValidationError("after_ok", f"at most {MAX_DEPENDENCIES} dependencies")
    for job_id in after_ok:
        row = s.get(JobRow, job_id)
        if row is None or not can_view_job(caller, row.user_id, row.project_id):
            raise ValidationError("after_ok", f"job {job_id} not found")
        state = JobState(row.state)
        if state.is_terminal and state is not JobState.COMPLETED:
            raise ValidationError(
                "after_ok", f"job {job_id} ended {state}; a job after it could never run"
            )
