"""Job templates a centre admin publishes: form fields that become a job.

A template names typed fields (with defaults, ranges and choices) and a job whose values may
refer to them as `{field}`. Values substituted into the command are shell-quoted, so a form
value can never inject a second command.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import msg

_FIELD_TYPES = ("string", "int", "choice")
_REF = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_NAME = re.compile(r"^[a-z][a-z0-9-]{1,63}$")
JOB_KEYS = ("command", "gpus_per_node", "nodes", "gpu_type", "time", "name", "qos", "image")


@dataclass(frozen=True, slots=True)
class TemplateField:
    name: str
    type: str = "string"
    label: str = ""
    required: bool = False
    default: str | int | None = None
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()

    def coerce(self, raw: object) -> str | int:
        if self.type == "int":
            try:
                value = int(str(raw))
            except ValueError:
                raise ValidationError.about(
                    f"fields.{self.name}", msg("error.whole_number", got=repr(raw))
                ) from None
            if self.minimum is not None and value < self.minimum:
                raise ValidationError.about(
                    f"fields.{self.name}", msg("error.at_least", least=self.minimum)
                )
            if self.maximum is not None and value > self.maximum:
                raise ValidationError.about(
                    f"fields.{self.name}", msg("error.at_most", most=self.maximum)
                )
            return value
        text = str(raw)
        if self.type == "choice" and text not in self.choices:
            raise ValidationError.about(
                f"fields.{self.name}",
                msg("error.one_of", choices=", ".join(self.choices), got=repr(text)),
            )
        if len(text) > 4096:
            raise ValidationError.about(
                f"fields.{self.name}", msg("error.at_most_chars", most=4096)
            )
        return text


@dataclass(frozen=True, slots=True)
class JobTemplate:
    name: str
    title: str
    description: str
    fields: tuple[TemplateField, ...]
    job: Mapping[str, str]

    def render(self, values: Mapping[str, object]) -> dict[str, Any]:
        """The job fields this template makes from the submitted form values."""
        known = {f.name: f for f in self.fields}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValidationError.about(
                f"fields.{unknown[0]}",
                msg(
                    "error.template_no_field",
                    template=repr(self.name),
                    field=repr(unknown[0]),
                    known=", ".join(known) or "-",
                ),
            )
        resolved: dict[str, str | int] = {}
        for f in self.fields:
            if f.name in values and values[f.name] not in (None, ""):
                resolved[f.name] = f.coerce(values[f.name])
            elif f.default is not None:
                resolved[f.name] = f.coerce(f.default)
            elif f.required:
                raise ValidationError.about(f"fields.{f.name}", msg("error.field_required"))
        job: dict[str, Any] = {}
        for key, pattern in self.job.items():
            job[key] = _REF.sub(partial(_value, resolved=resolved, quote=key == "command"), pattern)
        for key in ("gpus_per_node", "nodes"):
            if key in job:
                try:
                    job[key] = int(job[key])
                except ValueError:
                    raise ValidationError.about(
                        key,
                        msg(
                            "error.template_not_number",
                            template=repr(self.name),
                            got=repr(job[key]),
                        ),
                    ) from None
        return job


def _value(match: re.Match[str], *, resolved: Mapping[str, str | int], quote: bool) -> str:
    name = match.group(1)
    if name not in resolved:
        return ""
    text = str(resolved[name])
    return shlex.quote(text) if quote else text


def parse_template(data: object) -> JobTemplate:
    """Validate a template definition (as loaded from YAML or JSON)."""
    if not isinstance(data, dict):
        raise ValidationError.about("template", msg("error.template_mapping"))
    name = str(data.get("name", ""))
    if not _NAME.match(name):
        raise ValidationError.about("template.name", msg("error.template_name"))
    raw_fields = data.get("fields") or []
    if not isinstance(raw_fields, list):
        raise ValidationError.about("template.fields", msg("error.must_be_list"))
    fields: list[TemplateField] = []
    for i, raw in enumerate(raw_fields):
        if not isinstance(raw, dict) or not raw.get("name"):
            raise ValidationError.about(f"template.fields[{i}]", msg("error.template_field_name"))
        ftype = str(raw.get("type", "string"))
        if ftype not in _FIELD_TYPES:
            raise ValidationError.about(
                f"template.fields[{i}].type",
                msg("error.template_field_type", types=", ".join(_FIELD_TYPES)),
            )
        fields.append(
            TemplateField(
                name=str(raw["name"]),
                type=ftype,
                label=str(raw.get("label", raw["name"])),
                required=bool(raw.get("required", False)),
                default=raw.get("default"),
                minimum=raw.get("min"),
                maximum=raw.get("max"),
                choices=tuple(str(c) for c in raw.get("choices", ())),
            )
        )
    job = data.get("job")
    if not isinstance(job, dict) or "command" not in job:
        raise ValidationError.about("template.job", msg("error.template_job"))
    bad = sorted(set(job) - set(JOB_KEYS))
    if bad:
        raise ValidationError.about("template.job", msg("error.template_job_key", key=repr(bad[0])))
    names = {f.name for f in fields}
    for key, value in job.items():
        for ref in _REF.findall(str(value)):
            if ref not in names:
                raise ValidationError.about(
                    f"template.job.{key}", msg("error.template_unknown_ref", field=repr(ref))
                )
    return JobTemplate(
        name=name,
        title=str(data.get("title", name)),
        description=str(data.get("description", "")),
        fields=tuple(fields),
        job={str(k): str(v) for k, v in job.items()},
    )
