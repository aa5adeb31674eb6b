"""Messages for people as codes with parameters, rendered in the reader's language later.

Why: a scheduler reason, an error or a notification is decided in one place (often the pure
core) but read in many: a Korean portal page, an English API client, a CLI run under
`LANG=ko_KR.UTF-8`, an e-mail. Deciding the words where the event happens would fix one
language and one time zone for everybody. So the producer returns a `Message` (a stable
code and typed parameters) and each reader renders it: `english()` here (the API's
`*_detail` fields, logs), `gpucenter.locale.render()` for any language and zone.

The English templates live in `ENGLISH`, keyed by code; they are also the msgids of the
Korean catalogue (`gpucenter/locale/ko/messages.po`), and the catalogue check fails on a code
without a translation. Parameters are `%(name)s` placeholders. Values keep their type so
that readers can format them: `At` is an instant (shown in the reader's zone), a float a
quantity (one decimal), a nested `Message` a phrase rendered in the same language.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

from gpucenter.domain.texts_plans import PLAN_TEXTS
from gpucenter.domain.texts_programmes import PROGRAMME_ERRORS
from gpucenter.domain.texts_services import SERVICE_ERRORS
from gpucenter.domain.texts_sessions import SESSION_ERRORS


@dataclass(frozen=True, slots=True)
class At:
    """An instant (seconds since the epoch) to be shown in the reader's time zone."""

    t: float

    def iso(self) -> str:
        """UTC ISO-8601 to the second, e.g. "2026-11-29T18:40:00Z": the language-neutral
        form used in English details and logs."""
        try:
            return datetime.fromtimestamp(round(self.t), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (OverflowError, OSError, ValueError):  # beyond year 9999: keep the number
            return f"{self.t:.0f}"


@dataclass(frozen=True, slots=True)
class Num:
    """A quantity shown with `digits` decimals and the reader's digit grouping; `percent`
    multiplies by 100 and adds the percent sign."""

    value: float
    digits: int = 1
    percent: bool = False

    def english(self) -> str:
        if self.percent:
            return f"{self.value:.{self.digits}%}"
        return f"{self.value:,.{self.digits}f}"


Param: TypeAlias = "str | int | float | At | Num | Message"


@dataclass(frozen=True, slots=True)
class Message:
    """A code from `ENGLISH` and its parameters (a tuple of pairs, so messages hash and can
    be interned by a scheduling pass)."""

    code: str
    params: tuple[tuple[str, Param], ...] = ()

    @classmethod
    def of(cls, code: str, /, **params: Param) -> Message:
        return cls(code, tuple(params.items()))

    @property
    def values(self) -> dict[str, Param]:
        return dict(self.params)

    def english(self) -> str:
        """The message in English, instants in UTC."""
        template = ENGLISH.get(self.code)
        if template is None:
            return self.code
        return fill(template, {k: english_value(v) for k, v in self.params})

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form: {"code": ..., "params": {...}}; an instant is {"at": t}, a
        nested message is its own JSON form."""
        return {"code": self.code, "params": {k: _json_value(v) for k, v in self.params}}

    @classmethod
    def from_json(cls, data: object) -> Message | None:
        """The message `to_json` made, or None for anything else (a reader never fails on
        a stored value it does not understand: it falls back to the English detail)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("code"), str):
            return None
        raw = data.get("params") or {}
        if not isinstance(raw, Mapping):
            return None
        params: list[tuple[str, Param]] = []
        for key, value in raw.items():
            parsed = _from_json_value(value)
            if parsed is None:
                return None
            params.append((str(key), parsed))
        return cls(str(data["code"]), tuple(params))


def _json_value(value: Param) -> Any:
    if isinstance(value, At):
        return {"at": value.t}
    if isinstance(value, Num):
        return {"num": value.value, "digits": value.digits, "percent": value.percent}
    if isinstance(value, Message):
        return value.to_json()
    return value


def _from_json_value(value: object) -> Param | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str | int | float):
        return value
    if isinstance(value, Mapping):
        if "at" in value and isinstance(value["at"], int | float):
            return At(float(value["at"]))
        if "num" in value and isinstance(value["num"], int | float):
            return Num(float(value["num"]), int(value.get("digits", 1)), bool(value.get("percent")))
        return Message.from_json(value)
    return None


def english_value(value: Param) -> str:
    if isinstance(value, At):
        return value.iso()
    if isinstance(value, Message | Num):
        return value.english()
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def fill(template: str, values: Mapping[str, str]) -> str:
    """`template` with its `%(name)s` placeholders filled; a missing value shows as '?'
    rather than failing the page that shows it."""
    try:
        return template % _Lenient(values)
    except (TypeError, ValueError):
        return template


class _Lenient(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"


def msg(code: str, /, **params: Param) -> Message:
    """Shorthand for `Message.of`."""
    if code not in ENGLISH:
        raise KeyError(f"unknown message code {code!r}")
    return Message.of(code, **params)


# --- the catalogue: every code and its English text -----------------------------------------
# Scheduler reasons (core/passes.py, services/scheduling): why a job waits or stopped.
_WAITS = {
    "shape": "%(nodes)s node(s) x %(gpus)s %(types)s GPU(s)",
    "wait.allocation_empty": "the project's allocation has no GPU-hours left",
    "wait.allocation_short": (
        "the job may use %(need)s GPU-hours but the allocation has %(left)s left; "
        "shorten the time limit or ask for more"
    ),
    "wait.quota": (
        "the project is at its concurrent GPU limit (%(caps)s); %(shape)s would exceed it"
    ),
    "wait.topology": "%(shape)s free, but not within %(blocks)s network block(s)",
    "wait.reservation": (
        "free GPUs are reserved by '%(name)s' from %(start)s; "
        "a shorter time limit would let the job run before it"
    ),
    "wait.priority": (
        "free GPUs are held for higher-priority job %(job)s; a shorter time limit could backfill"
    ),
    "wait.resources": "waiting for %(shape)s; not enough free now",
    "wait.planned": "waiting for %(shape)s; expected to start by %(start)s on %(nodes)s",
    "wait.never": "%(shape)s do not exist in any pool this job may use",
    "wait.dependency": "waiting for job(s) %(jobs)s to complete",
    "wait.dependency_failed": (
        "cancelled: job %(job)s ended %(state)s, so this job's after-ok dependency can never be met"
    ),
    "wait.site_unavailable": "%(detail)s",
    "wait.new": "submitted; the scheduler has not looked at it yet",
    "job.cancelled_pending": "cancelled by %(user)s before it started",
    "job.cancel_requested": "cancel requested by %(user)s",
    "job.could_not_start": "could not start: %(error)s",
    "project.sharing_on": "%(project)s shares its jobs' outputs with its members",
    "project.sharing_off": "%(project)s keeps each job's outputs to its owner",
    "error.sharing_not_pi": "only the PI of %(project)s (or a centre admin) may change "
    "whether it shares its jobs' outputs",
    "error.logs_not_shared": "job %(job)s belongs to another member of its project, which "
    "does not share its jobs' outputs; its PI can turn sharing on",
    "job.env_unreadable": "could not start: its environment could not be decrypted "
    "(%(why)s); submit it again",
    "job.being_preempted": "being preempted: %(why)s",
    "job.exit_code": "exited with code %(code)s",
    "job.time_limit": "reached its time limit of %(limit)s",
}

# Why pending, answered (services/jobs/pending.py): the sentence and what would help.
_PENDING = {
    "pending.position": "%(position)s of %(total)s waiting jobs for %(gpu_type)s GPUs",
    "pending.expected": "expected to start by %(start)s",
    "pending.no_estimate": "no start time can be estimated yet",
    "pending.fewer_gpus": "with %(gpus)s GPU(s) per node it could start now",
    "pending.other_type": "on %(gpu_type)s GPUs it could start now",
    "pending.shorter_limit_h": (
        "with a time limit of %(hours)s hour(s) or less it could start now"
    ),
    "pending.shorter_limit_m": (
        "with a time limit of %(minutes)s minutes or less it could start now"
    ),
    "pending.top_up": "ask the project's PI for more GPU-hours",
    "pending.wait_dependency": "it starts once the jobs it depends on have completed",
    "pending.sentence.resources": "Not enough free %(gpu_type)s GPUs for this job right now.",
    "pending.sentence.priority": "Free GPUs are held for a job ahead of this one in the queue.",
    "pending.sentence.reservation": "The free GPUs are reserved for another programme.",
    "pending.sentence.allocation": "The project's allocation cannot cover this job.",
    "pending.sentence.quota": "The project already uses as many GPUs as it may at once.",
    "pending.sentence.topology": "Enough GPUs are free, but not close enough on the network.",
    "pending.sentence.dependency": "This job waits for other jobs to complete.",
    "pending.sentence.site": "The site that would run this job is not answering.",
    "pending.sentence.new": "The scheduler has not looked at this job yet.",
    "pending.sentence.site_not_ready": (
        "The site cannot run this job yet; it is being set up for the project."
    ),
    "pending.sentence.held": "The project is on hold until an overdue report is submitted",
}

# Errors the interfaces show (domain/errors.py carries one as `message`).
_ERRORS = {
    "error.not_found": "%(kind)s %(key)s not found",
    "error.job_ended": "job %(job)s has already ended (%(state)s)",
    "error.not_pending": "job %(job)s is not pending",
    "error.cancel_not_owner": "only the job's owner or an admin may cancel it",
    "error.script_missing": "no such file: %(path)s",
    "error.cli_unreachable": "cannot reach the gpucenter server at %(url)s; is it running?",
    "error.cli_not_signed_in": (
        "not signed in: run 'gpucenter login' (it keeps the token in %(path)s) or set "
        "GPUCENTER_TOKEN"
    ),
    "error.cli_database": "cannot use the database: %(problem)s; check GPUCENTER_DATABASE_URL",
    "error.cli_settings": (
        "unusable settings: %(problem)s (set in the environment or the CLI's configuration "
        "file: correct them, or unset them for the defaults)"
    ),
    "error.field": "%(field)s: %(problem)s",
    "error.unknown_project": "unknown project %(project)s (or not yours)",
    "error.unknown_template": "unknown template %(name)s; published: %(published)s",
    "error.unknown_gpu_type": "unknown GPU type %(gpu_type)s; this site has %(types)s",
    "error.too_many_gpus": (
        "%(gpus)s GPUs per node requested but no %(gpu_type)s node has more than %(most)s"
    ),
    "error.too_many_nodes": (
        "%(nodes)s nodes requested but the site has only %(most)s nodes with %(gpu_type)s"
    ),
    "error.no_command": "give a command, a script or a template",
    "error.token_invalid": "invalid or revoked token",
    "error.key_length": "must be 1-200 characters",
    "error.no_allocation": "project %(project)s has no active allocation to charge",
    "error.site_unregistered": "the site is not registered yet; start the server once",
    "error.env_pair": "expected NAME=VALUE, got %(pair)s",
    "error.env_name": "invalid variable name %(name)s",
    "error.fields_need_template": "form fields need a template; name one with 'template'",
    "error.script_and_command": "give either a command or a script, not both",
    "error.project_missing": "name the project to charge (-p/--project)",
    "error.gpu_type_ambiguous": "this site has several GPU types (%(types)s); name one",
    "error.gpu_type_missing": "must name a GPU type, for example 'h100'",
    "error.at_least_one": "must be at least 1",
    "error.at_least": "must be at least %(least)s",
    "error.at_most": "must be at most %(most)s",
    "error.at_most_chars": "must be at most %(most)s characters",
    "error.command_empty": "must not be empty; give the program to run",
    "error.time_limit_short": "must be at least 1 second",
    "error.time_limit_long": "must be at most 30 days",
    "error.workdir_relative": "must be an absolute path",
    "error.workdir_missing": "%(path)s is not an existing directory",
    "error.unknown_qos": "unknown QoS %(qos)s; use one of %(names)s",
    "error.image_no_containers": (
        "site %(sites)s runs jobs as plain processes and cannot start container images; "
        "leave --image out or choose a Kubernetes site"
    ),
    "error.image_mixed_sites": (
        "GPU type %(gpu_type)s is also on site(s) %(cannot)s, which cannot start container "
        "images, and a job goes to whichever site can start it first; sites that run images: "
        "%(offered)s. Ask for a GPU type only they have, or leave the image out"
    ),
    "error.too_many_dependencies": "at most %(most)s dependencies",
    "error.dependency_missing": "job %(job)s not found",
    "error.dependency_ended": "job %(job)s ended %(state)s; a job after it could never run",
    "error.directive_form": "line %(line)s: write '%(prefix)s --option value', got %(got)s",
    "error.directive_syntax": "line %(line)s: %(problem)s",
    "error.directive_unknown": "line %(line)s: unknown directive option %(name)s; known: %(known)s",
    "error.directive_value_missing": "line %(line)s: %(name)s needs a value",
    "error.directive_value": "line %(line)s: %(name)s expects %(what)s, got %(got)s",
    "error.array_range": "%(spec)s is not an index range; write 0-9, 1,3,5 or 0-20:5",
    "error.array_empty": "needs at least one index, none negative",
    "error.array_size": "at most %(most)s tasks per array job",
    "error.whole_number": "must be a whole number, got %(got)s",
    "error.one_of": "must be one of %(choices)s, got %(got)s",
    "error.template_no_field": (
        "template %(template)s has no field %(field)s; its fields are %(known)s"
    ),
    "error.field_required": "is required by this template",
    "error.template_not_number": "template %(template)s made %(got)s, not a number",
    "error.log_stream": "must be 'stdout' or 'stderr'",
    "error.not_negative": "must not be negative",
    "error.not_empty": "must not be empty",
    "error.node_names_unique": "node names must be unique within a site",
    "error.cursor": "not a cursor this API gave out; start again without one",
    "error.log_unsafe": (
        "job %(job)s's %(stream)s is not a plain file of its own (%(reason)s); "
        "gpucenter does not read it"
    ),
    "error.job_failed": "job %(job)s ended %(state)s: %(detail)s",
}

# Health of sites and the service (services/ops, /readyz, the operations page).
_HEALTH = {
    "health.ok": "answering",
    "health.site_down": "site %(site)s is not answering: %(error)s; retrying in %(seconds)s s",
    "health.node_down": "node %(node)s is down",
    "health.database": "the database cannot be reached: %(error)s",
    "health.migrations": "the database is at migration %(current)s, the code needs %(head)s",
    "health.no_site": "no site is registered yet",
}

# Notifications and e-mail (services/accounting/budgets.py).
_NOTICES = {
    "budget.subject": (
        "[gpucenter] allocation %(allocation)s of %(project)s has used %(percent)s of its GPU-hours"
    ),
    "budget.body": (
        "Allocation %(allocation)s (%(project)s) has used %(percent)s of %(hours)s GPU-hours; "
        "it ends %(ends)s."
    ),
    "budget.exhausted_hold": "It is now exhausted: new jobs wait.",
    "budget.exhausted_opportunistic": (
        "It is now exhausted: %(jobs)s pending job(s) run opportunistically "
        "(on idle GPUs, preemptible)."
    ),
}

# The award optimiser's explanations (allocation/explain.py), forwarded to applicants.
_AWARDS = {
    "award.binding_capacity": "capacity %(gpu_type)s %(period)s",
    "award.binding_share": "share %(name)s",
    "award.binding_org": "organisation cap %(org)s",
    "award.below_threshold": "score %(score)s is below the call's threshold %(threshold)s",
    "award.minimum_over_request": "its useful minimum is larger than its request",
    "award.org_cap": (
        "organisation %(org)s already holds %(held)s of its %(cap)s GPU-hour cap; "
        "the useful minimum of %(minimum)s would exceed it"
    ),
    "award.capacity": (
        "capacity: %(cells)s filled by higher-value awards; only %(room)s GPU-hours "
        "were left for it, less than its useful minimum of %(minimum)s"
    ),
    "award.capacity_bar": (
        "capacity: %(cells)s filled by higher-value awards (awards there scored at least "
        "%(bar)s); only %(room)s GPU-hours were left for it, less than its useful minimum "
        "of %(minimum)s"
    ),
    "award.share_ceiling": "share ceiling %(share)s (%(percent)s) is reached",
    "award.outscored": (
        "score %(score)s: the GPU-hours it needs scored higher elsewhere "
        "(a share floor or a lease window held them for other applications)"
    ),
    "award.partial_cap": "%(got)s of %(asked)s GPU-hours: organisation %(org)s reached its cap",
    "award.partial_capacity": "%(got)s of %(asked)s GPU-hours: capacity ran out in %(cells)s",
    "award.partial_other": (
        "%(got)s of %(asked)s GPU-hours: a share rule or lease overlap limited it"
    ),
}

ENGLISH: dict[str, str] = {
    **_WAITS,
    **_PENDING,
    **_ERRORS,
    **_HEALTH,
    **_NOTICES,
    **_AWARDS,
    **PLAN_TEXTS,
    **PROGRAMME_ERRORS,
    **SERVICE_ERRORS,
    **SESSION_ERRORS,
}
