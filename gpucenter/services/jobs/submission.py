"""The rules of a submission's form: from what a user sent (flags, a script with directives,
a template) to the values of a job, each rule a pure function of what it is given.

Precedence, highest first: fields given explicitly, `#GPUCENTER` directives in the script,
the template's job, then defaults. The ORDER in which these rules run, and the reads they
need (the template, the jobs named in after_ok), live in `pipeline.py`: one list that the
REST route, the web form, the CLI and the submission fast path all run.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from gpucenter.auth.permissions import Caller, can_view_job
from gpucenter.domain.directives import parse_array, parse_directives, redact_env_values
from gpucenter.domain.durations import parse_duration
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.jobs import GpuRequest, JobSpec, JobState
from gpucenter.domain.messages import msg
from gpucenter.domain.templates import JobTemplate, parse_template
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

    def fingerprint(self, secret_key: bytes | None = None) -> str:
        """A digest of the whole form (an Idempotency-Key's body check). The same JSON as
        `json.dumps(asdict(self), ...)` without asdict's deep copy (a hot path).

        With `secret_key`, the env's values enter only as an HMAC under it: the digest is
        stored with the job (`request_hash`), and a plain hash of a weak secret beside the
        rest of the form in clear could be found by guessing (issue 17)."""
        values = {name: getattr(self, name) for name in _FORM_FIELDS}
        if secret_key is not None and self.env:
            canonical = json.dumps(dict(self.env), sort_keys=True).encode()
            values["env"] = "hmac:" + hmac.new(secret_key, canonical, "sha256").hexdigest()
        body = json.dumps(values, sort_keys=True, default=str)
        return hashlib.sha256(body.encode()).hexdigest()


_FORM_FIELDS = tuple(f.name for f in fields(JobForm))


def template_of(name: str, body: Any | None, published: Sequence[str]) -> JobTemplate:
    """The template `name` from its stored body; an unknown one names those published
    (`published` is read only when the body is missing)."""
    if body is None:
        raise ValidationError.about(
            "template",
            msg("error.unknown_template", name=repr(name), published=", ".join(published) or "-"),
        )
    return parse_template(body)


def _env_pairs(values: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in values:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationError.about("env", msg("error.env_pair", pair=repr(pair)))
        env[key] = value
    return env


def layers(template: JobTemplate | None, form: JobForm) -> dict[str, Any]:
    """Merge template, directives and explicit fields (later layers win)."""
    merged: dict[str, Any] = {}
    if template is not None:
        merged.update(template.render(form.fields or {}))
    elif form.fields:
        raise ValidationError.about("fields", msg("error.fields_need_template"))
    if form.script is not None:
        if form.command is not None:
            raise ValidationError.about("script", msg("error.script_and_command"))
        directives = parse_directives(form.script)
        if "env" in directives:
            directives["env"] = _env_pairs(directives["env"])
        merged.update(directives)
        merged["command"] = redact_env_values(form.script)  # the values go sealed, in env
    for key, value in asdict(form).items():
        if key in ("script", "template", "fields") or value is None:
            continue
        if key == "env":
            merged["env"] = {**merged.get("env", {}), **value}
        else:
            merged[key] = value
    return merged


def project_of(merged: Mapping[str, Any]) -> str:
    project = merged.get("project")
    if not project:
        raise ValidationError.about("project", msg("error.project_missing"))
    return str(project)


def time_limit_of(merged: Mapping[str, Any]) -> int:
    """Seconds, from time_limit_s or a duration; its range is the job spec's rule."""
    if "time_limit_s" in merged:
        return int(merged["time_limit_s"])
    if "time" in merged:
        return parse_duration(str(merged["time"]))
    return DEFAULT_TIME_LIMIT_S


def gpu_request_of(ctx: AppContext, merged: Mapping[str, Any]) -> GpuRequest:
    """The GPUs asked for, refused unless some state of this site could ever run them."""
    gpu = GpuRequest(
        _resolve_gpu_type(ctx, merged.get("gpu_type")),
        int(merged.get("gpus_per_node", 1)),
        int(merged.get("nodes", 1)),
    )
    ctx.site.site.check_request(gpu)
    return gpu


def _resolve_gpu_type(ctx: AppContext, requested: object) -> str:
    if requested:
        return str(requested).strip().lower()
    types = sorted(ctx.site.site.gpu_types)
    if len(types) == 1:
        return types[0]
    raise ValidationError.about("gpu_type", msg("error.gpu_type_ambiguous", types=", ".join(types)))


def workdir_of(merged: Mapping[str, Any]) -> str | None:
    workdir = merged.get("workdir")
    if workdir is not None:
        if not os.path.isabs(workdir):
            raise ValidationError.about("workdir", msg("error.workdir_relative"))
        if not Path(workdir).is_dir():
            raise ValidationError.about("workdir", msg("error.workdir_missing", path=str(workdir)))
    return workdir


def qos_of(merged: Mapping[str, Any]) -> str:
    qos = str(merged.get("qos", "normal"))
    if qos not in QOS_NAMES:
        raise ValidationError.about(
            "qos", msg("error.unknown_qos", qos=repr(qos), names=", ".join(QOS_NAMES))
        )
    return qos


def image_of(
    ctx: AppContext, merged: Mapping[str, Any], gpu: GpuRequest | None = None
) -> str | None:
    """The job's container image, accepted only where every site that could run the job
    runs images: the core places a job on whichever site has its GPU type free first, and
    cannot yet be told to keep one job to some of the sites that have its type. So an image
    job must ask for a GPU type that only sites declaring `containers` (Kubernetes) have;
    anything else is refused here, saying which sites could run it, never at dispatch."""
    image = merged.get("image")
    if not image:
        return None
    sites = ctx.site_runtimes()
    runs_images = [rt for rt in sites if rt.dispatcher.capabilities.containers]
    if not runs_images:
        names = ", ".join(repr(rt.name) for rt in sites)
        raise ValidationError.about("image", msg("error.image_no_containers", sites=names))
    if gpu is None or len(sites) == 1:
        return str(image)
    types = set(gpu.acceptable_types)
    offered = "; ".join(
        f"{rt.name!r} ({', '.join(sorted(rt.loaded.site.gpu_types))})" for rt in runs_images
    )
    having = [rt for rt in sites if types & rt.loaded.site.gpu_types]
    cannot = [rt.name for rt in having if not rt.dispatcher.capabilities.containers]
    if cannot:
        wanted = ", ".join(sorted(types))
        raise ValidationError.about(
            "image",
            msg(
                "error.image_mixed_sites",
                gpu_type=wanted,
                cannot=", ".join(map(repr, cannot)),
                offered=offered,
            ),
        )
    return str(image)


def spec_of(
    form: JobForm,
    merged: Mapping[str, Any],
    gpu: GpuRequest,
    time_limit_s: int,
    workdir: str | None,
) -> JobSpec:
    """The job spec; its own rules (command, time limit range, name, env) refuse here."""
    command = str(merged.get("command") or "")
    default_name = command.strip().split()[0][:200] if command.strip() else ""
    if form.script is not None:
        default_name = "script"
    return JobSpec(
        name=str(merged.get("name") or default_name),
        command=command,
        gpu=gpu,
        time_limit_s=time_limit_s,
        workdir=workdir,
        env=dict(merged.get("env") or {}),
    )


def after_ok_of(merged: Mapping[str, Any]) -> tuple[int, ...]:
    after_ok = tuple(int(j) for j in merged.get("after_ok") or ())
    if len(after_ok) > MAX_DEPENDENCIES:
        raise ValidationError.about(
            "after_ok", msg("error.too_many_dependencies", most=MAX_DEPENDENCIES)
        )
    return after_ok


def check_dependency(caller: Caller, job_id: int, found: Sequence[Any] | None) -> None:
    """One job named in after_ok, as (user_id, project_id, state) or None if missing: it
    must be visible to the caller and able still to complete."""
    if found is None or not can_view_job(caller, found[0], found[1]):
        raise ValidationError.about("after_ok", msg("error.dependency_missing", job=str(job_id)))
    state = JobState(found[2])
    if state.is_terminal and state is not JobState.COMPLETED:
        raise ValidationError.about(
            "after_ok", msg("error.dependency_ended", job=str(job_id), state=str(state))
        )


def array_of(merged: Mapping[str, Any]) -> tuple[int, ...]:
    array = merged.get("array")
    return tuple(parse_array(str(array))) if array else ()


__all__ = [
    "QOS_NAMES",
    "JobForm",
    "after_ok_of",
    "array_of",
    "check_dependency",
    "gpu_request_of",
    "image_of",
    "layers",
    "project_of",
    "qos_of",
    "spec_of",
    "template_of",
    "time_limit_of",
    "workdir_of",
]
