"""`#GPUCENTER` directives at the top of a job script, in the spirit of Slurm's `#SBATCH`.

Directives are read from the comment block at the start of the script (after an optional
shebang) up to the first line that is neither blank nor a comment. Each error names the line.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import msg

PREFIX = "#GPUCENTER"


def _int(value: str) -> int:
    return int(value)


def _str(value: str) -> str:
    return value


def _int_list(value: str) -> list[int]:
    return [int(v) for v in value.replace(":", ",").split(",") if v]


@dataclass(frozen=True, slots=True)
class _Option:
    field: str
    convert: Callable[[str], Any]
    what: str
    repeat: bool = False


_OPTIONS: Mapping[str, _Option] = {
    "--project": _Option("project", _str, "a project name"),
    "-p": _Option("project", _str, "a project name"),
    "--gpus": _Option("gpus_per_node", _int, "a whole number of GPUs per node"),
    "-g": _Option("gpus_per_node", _int, "a whole number of GPUs per node"),
    "--nodes": _Option("nodes", _int, "a whole number of nodes"),
    "-N": _Option("nodes", _int, "a whole number of nodes"),
    "--gpu-type": _Option("gpu_type", _str, "a GPU type such as h100"),
    "-t": _Option("gpu_type", _str, "a GPU type such as h100"),
    "--time": _Option("time", _str, "a duration such as 90, 30m, 2h or 1:30:00"),
    "--name": _Option("name", _str, "a job name"),
    "--qos": _Option("qos", _str, "a QoS name"),
    "--image": _Option("image", _str, "a container image"),
    "--workdir": _Option("workdir", _str, "an absolute directory"),
    "--array": _Option("array", _str, "an index range such as 0-9 or 1,3,5"),
    "--after-ok": _Option("after_ok", _int_list, "job ids such as 12,13"),
    "--env": _Option("env", _str, "NAME=VALUE", repeat=True),
    "-e": _Option("env", _str, "NAME=VALUE", repeat=True),
}


def parse_directives(script: str) -> dict[str, Any]:
    """Return the options the script's `#GPUCENTER` lines set, keyed by job field name."""
    found: dict[str, Any] = {}
    for number, raw in enumerate(script.splitlines(), start=1):
        line = raw.strip()
        if number == 1 and line.startswith("#!"):
            continue
        if not line:
            continue
        if not line.startswith("#"):
            break
        if not line.startswith(PREFIX):
            continue
        rest = line[len(PREFIX) :]
        if rest and not rest[0].isspace():
            raise ValidationError.about(
                "script", msg("error.directive_form", line=number, prefix=PREFIX, got=repr(line))
            )
        try:
            words = shlex.split(rest)
        except ValueError as exc:
            raise ValidationError.about(
                "script", msg("error.directive_syntax", line=number, problem=str(exc))
            ) from None
        _apply(words, number, found)
    return found


SEALED = "(sealed)"
"""What an env directive's value reads as in the stored script (`redact_env_values`)."""


def redact_env_values(script: str) -> str:
    """The script as stored: each ``#GPUCENTER --env NAME=VALUE`` line keeps its name and
    loses its value. Why: the values are the job's environment, which is sealed at rest and
    shown to its owner only (issue 17); the script text is stored in clear and shown to the
    project, so a token given as a directive would otherwise sit there readable. The job
    loses nothing: directives are comments to the shell, and the environment reaches the
    job from the sealed copy. Call it after `parse_directives` accepted the script."""
    lines = script.splitlines(keepends=True)
    for number, raw in enumerate(lines):
        line = raw.strip()
        if (number == 0 and line.startswith("#!")) or not line:
            continue
        if not line.startswith("#"):
            break
        if not line.startswith(PREFIX):
            continue
        words = shlex.split(line[len(PREFIX) :])
        changed = False
        for i, word in enumerate(words):
            name, eq, inline = word.partition("=")
            if _OPTIONS.get(name) is None or _OPTIONS[name].field != "env":
                continue
            if eq:  # --env=NAME=VALUE
                key = inline.partition("=")[0]
                words[i] = f"{name}={key}={SEALED}"
                changed = True
            elif i + 1 < len(words):  # --env NAME=VALUE
                words[i + 1] = f"{words[i + 1].partition('=')[0]}={SEALED}"
                changed = True
        if changed:
            indent = raw[: len(raw) - len(raw.lstrip())]
            ending = raw[len(raw.rstrip("\r\n")) :]
            lines[number] = f"{indent}{PREFIX} {shlex.join(words)}{ending}"
    return "".join(lines)


def _apply(words: list[str], number: int, found: dict[str, Any]) -> None:
    i = 0
    while i < len(words):
        word = words[i]
        name, eq, inline = word.partition("=")
        option = _OPTIONS.get(name)
        if option is None:
            known = ", ".join(sorted(k for k in _OPTIONS if k.startswith("--")))
            raise ValidationError.about(
                "script", msg("error.directive_unknown", line=number, name=repr(name), known=known)
            )
        if eq:
            value = inline
        else:
            if i + 1 >= len(words):
                raise ValidationError.about(
                    "script", msg("error.directive_value_missing", line=number, name=name)
                )
            i += 1
            value = words[i]
        try:
            converted = option.convert(value)
        except ValueError:
            raise ValidationError.about(
                "script",
                msg(
                    "error.directive_value",
                    line=number,
                    name=name,
                    what=option.what,
                    got=repr(value),
                ),
            ) from None
        if option.repeat:
            found.setdefault(option.field, []).append(converted)
        else:
            found[option.field] = converted
        i += 1


def parse_array(spec: str, max_tasks: int = 1000) -> list[int]:
    """Indices of an array job from '0-9', '1,3,5' or '0-20:5' (step)."""
    indices: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            rng, _, step_text = part.partition(":")
            step = int(step_text) if step_text else 1
            if step < 1:
                raise ValueError
            if "-" in rng:
                lo_text, hi_text = rng.split("-", 1)
                lo, hi = int(lo_text), int(hi_text)
                if hi < lo:
                    raise ValueError
                indices.extend(range(lo, hi + 1, step))
            else:
                indices.append(int(rng))
    except ValueError:
        raise ValidationError.about("array", msg("error.array_range", spec=repr(spec))) from None
    if not indices or min(indices) < 0:
        raise ValidationError.about("array", msg("error.array_empty"))
    unique = sorted(set(indices))
    if len(unique) > max_tasks:
        raise ValidationError.about("array", msg("error.array_size", most=max_tasks))
    return unique
