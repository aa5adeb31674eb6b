"""The submission pipeline: the ordered list of checks a job passes before it is written.

Why one list: the REST route (and the web form, the CLI, the SDK) submit through
`submit.submit` on the ORM session, while the fast path (`fast_path.py`) submits on an
async PostgreSQL connection. When each path spelled out its own order of checks, a check
added to one was silently skipped by the other. Here every check is a `Step` in `CHECKS`,
and both drivers (`run_checks`, `run_checks_async`) walk that same tuple, looked up when
they run: a check added to it is enforced on every path, in its place in the order, by
construction.

How a step reads the database without knowing which database API it is on: a step is a
function of the `Submission` (what the submission has loaded and decided so far). A step
that needs rows is a generator that yields a `Query` (a statement built once, its
parameters, and how its rows become a value) and receives the rows back:

    template = yield from template_query(name)

The sync driver runs the query on the session, the async one on its connection; the step
is the same code either way. A step raises a `DomainError` to refuse; nothing is written
until every step has passed.

To add a check, write a step and put it in `CHECKS` where it belongs. Steps must not
write: the drivers run them before the insert, and the fast path may run them twice (it
hands a submission it cannot finish to the general path, which starts again).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

from sqlalchemy import Executable, bindparam, select
from sqlalchemy.orm import Session

from gpucenter.auth.permissions import Caller
from gpucenter.domain.errors import Conflict, Unauthenticated, ValidationError
from gpucenter.domain.jobs import GpuRequest, JobSpec
from gpucenter.domain.messages import msg
from gpucenter.domain.sessions import SESSION_TEMPLATE_PREFIX, kind_named
from gpucenter.domain.templates import JobTemplate
from gpucenter.domain.text import refuse_control
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.sealed_env import EnvKeys, keys_for
from gpucenter.persistence.tables import JobRow, JobTemplateRow
from gpucenter.services.context import AppContext
from gpucenter.services.jobs import submission as rules
from gpucenter.services.jobs.submission import JobForm

T = TypeVar("T")
_FORM_TEXT = tuple(f.name for f in fields(JobForm))
Rows = list[Sequence[Any]]


@dataclass(frozen=True, slots=True)
class Query(Generic[T]):
    """One read a step needs. `statement` is built once (module level): the fast path
    compiles each statement once for its connection. It selects plain columns, never ORM
    entities, so that a row is the same tuple from a session or from psycopg. `first`:
    only the first row is fetched. `read` turns the rows into the step's value."""

    statement: Executable
    params: Mapping[str, Any]
    read: Callable[[Rows], T]
    first: bool = True

    def __iter__(self) -> Generator[Query[Any], Rows, T]:
        """`value = yield from query` in a step: the driver sends back the rows."""
        rows = yield self
        return self.read(rows)


Loads = Generator[Query[Any], Rows, None]


class Target(NamedTuple):
    """The answer of the submit-target query: everything about the project, its allocation,
    the site and the caller's token, in one round trip (`repositories.submit_target`)."""

    project_id: int
    allocation_id: int | None
    site_id: int | None
    member: bool
    token_ok: bool


def env_keys(ctx: AppContext) -> EnvKeys:
    """The key ring that seals this centre's job environments (see `sealed_env`)."""
    return keys_for(ctx.sessions.kw.get("info"))


@dataclass(slots=True)
class Submission:
    """What a submission has loaded and decided so far. The steps fill it in order; a
    field is None until the step that decides it has run."""

    caller: Caller
    form: JobForm
    key: str | None
    now: datetime
    fingerprint: str
    replayable: bool = False
    """True once the Idempotency-Key is known good: from there a refusal may be answered
    with the job that key made earlier (a retry of an accepted submission)."""
    template: JobTemplate | None = None
    merged: dict[str, Any] = field(default_factory=dict)
    project: str = ""
    time_limit_s: int = 0
    gpu: GpuRequest | None = None
    workdir: str | None = None
    qos: str = "normal"
    image: str | None = None
    spec: JobSpec | None = None
    after_ok: tuple[int, ...] = ()
    array_indices: tuple[int, ...] = ()
    target: Target | None = None

    @classmethod
    def start(cls, ctx: AppContext, caller: Caller, form: JobForm, key: str | None) -> Submission:
        secret = env_keys(ctx).digest_key() if form.env else None
        return cls(caller, form, key, ctx.now(), form.fingerprint(secret))

    @property
    def command(self) -> str:
        """The command (or script) as it will run: final once the job spec is made."""
        return self.spec.command if self.spec is not None else ""


@dataclass(frozen=True, slots=True)
class Step:
    """One check. `check` returns None, or (a generator) the queries it needs."""

    name: str
    check: Callable[[AppContext, Submission], Loads | None]


# --- the reads -------------------------------------------------------------------------

_TEMPLATE_BODY = select(JobTemplateRow.body).where(JobTemplateRow.name == bindparam("name"))
_TEMPLATE_NAMES = select(JobTemplateRow.name).order_by(JobTemplateRow.name)
_JOB_OWNER_STATE = select(JobRow.user_id, JobRow.project_id, JobRow.state).where(
    JobRow.id == bindparam("id")
)


def _first(rows: Rows) -> Sequence[Any] | None:
    return rows[0] if rows else None


def _first_value(rows: Rows) -> Any | None:
    return rows[0][0] if rows else None


def _target(rows: Rows) -> Target | None:
    return Target._make(rows[0]) if rows else None


def target_query(ctx: AppContext, sub: Submission) -> Query[Target | None]:
    assert sub.gpu is not None
    caller = sub.caller
    params = repo.submit_target_params(
        sub.project,
        caller.user_id,
        caller.token_id,
        ctx.site.site.name,
        sub.gpu.gpu_type,
        sub.now,
    )
    return Query(repo.submit_target_query(caller.token_id is not None), params, _target)


# --- the steps, in order ---------------------------------------------------------------


def plain_text(ctx: AppContext, sub: Submission) -> None:
    """No NUL or other control character anywhere in the form (see `domain.text`)."""
    if sub.key is not None:
        refuse_control(sub.key, "Idempotency-Key")
    for name in _FORM_TEXT:
        refuse_control(getattr(sub.form, name), name)


def check_key(ctx: AppContext, sub: Submission) -> None:
    if sub.key is not None and not 1 <= len(sub.key) <= 200:
        raise ValidationError.about("Idempotency-Key", msg("error.key_length"))
    sub.replayable = sub.key is not None


def load_template(ctx: AppContext, sub: Submission) -> Loads:
    name = sub.form.template
    if not name:
        return
    if name.startswith(SESSION_TEMPLATE_PREFIX):
        # An interactive session: its command is made by services/sessions, not a published
        # template; only the kind is checked here (the column tells launch to add its secret).
        kind_named(name[len(SESSION_TEMPLATE_PREFIX) :])
        return
    body = yield from Query(_TEMPLATE_BODY, {"name": name}, _first_value)
    published: list[str] = []
    if body is None:
        published = yield from Query(
            _TEMPLATE_NAMES, {}, lambda rows: [r[0] for r in rows], first=False
        )
    sub.template = rules.template_of(name, body, published)


def merge_layers(ctx: AppContext, sub: Submission) -> None:
    sub.merged = rules.layers(sub.template, sub.form)


def name_project(ctx: AppContext, sub: Submission) -> None:
    sub.project = rules.project_of(sub.merged)


def time_limit(ctx: AppContext, sub: Submission) -> None:
    sub.time_limit_s = rules.time_limit_of(sub.merged)


def gpu_request(ctx: AppContext, sub: Submission) -> None:
    sub.gpu = rules.gpu_request_of(ctx, sub.merged)


def workdir(ctx: AppContext, sub: Submission) -> None:
    sub.workdir = rules.workdir_of(sub.merged)


def qos(ctx: AppContext, sub: Submission) -> None:
    sub.qos = rules.qos_of(sub.merged)


def image(ctx: AppContext, sub: Submission) -> None:
    sub.image = rules.image_of(ctx, sub.merged, sub.gpu)


def job_spec(ctx: AppContext, sub: Submission) -> None:
    assert sub.gpu is not None
    sub.spec = rules.spec_of(sub.form, sub.merged, sub.gpu, sub.time_limit_s, sub.workdir)


def dependencies(ctx: AppContext, sub: Submission) -> Loads:
    """Each job named in after_ok, one read each, stopping at the first refused."""
    sub.after_ok = rules.after_ok_of(sub.merged)
    for job_id in sub.after_ok:
        found = yield from Query(_JOB_OWNER_STATE, {"id": job_id}, _first)
        rules.check_dependency(sub.caller, job_id, found)


def array(ctx: AppContext, sub: Submission) -> None:
    sub.array_indices = rules.array_of(sub.merged)


def load_target(ctx: AppContext, sub: Submission) -> Loads:
    sub.target = yield from target_query(ctx, sub)


def token_not_revoked(ctx: AppContext, sub: Submission) -> None:
    if sub.target is not None and not sub.target.token_ok:
        raise Unauthenticated.of(msg("error.token_invalid"))


def project_is_callers(ctx: AppContext, sub: Submission) -> None:
    target = sub.target
    if target is None or not (sub.caller.is_admin or target.member):
        # Same answer whether the project is missing or not the caller's: no leak.
        raise ValidationError.about(
            "project", msg("error.unknown_project", project=repr(sub.project))
        )


def allocation_to_charge(ctx: AppContext, sub: Submission) -> None:
    assert sub.target is not None
    if sub.target.allocation_id is None:
        raise ValidationError.about(
            "project", msg("error.no_allocation", project=repr(sub.project))
        )


def site_registered(ctx: AppContext, sub: Submission) -> None:
    assert sub.target is not None
    if sub.target.site_id is None:
        raise Conflict.of(msg("error.site_unregistered"))


CHECKS: tuple[Step, ...] = (
    Step("plain text", plain_text),
    Step("idempotency key", check_key),
    Step("template", load_template),
    Step("form layers", merge_layers),
    Step("project named", name_project),
    Step("time limit", time_limit),
    Step("gpu request fits the site", gpu_request),
    Step("workdir", workdir),
    Step("qos", qos),
    Step("image", image),
    Step("job spec", job_spec),
    Step("dependencies", dependencies),
    Step("array", array),
    Step("project, allocation, site, token", load_target),
    Step("token not revoked", token_not_revoked),
    Step("project is the caller's", project_is_callers),
    Step("allocation to charge", allocation_to_charge),
    Step("site registered", site_registered),
)
"""The checks of every submission, in order. Tests add one with monkeypatch; a real check
is added by writing it into this tuple."""


# --- the drivers -----------------------------------------------------------------------


def steps() -> Iterator[Step]:
    """The steps as they are now (`CHECKS` read at call time, so a check added to it is
    run by every driver)."""
    return iter(CHECKS)


def session_reader(s: Session) -> Callable[[Query[Any]], Rows]:
    """Queries answered on an ORM session (the general path, SQLite and PostgreSQL)."""

    def read(query: Query[Any]) -> Rows:
        result = s.execute(query.statement, query.params)
        if query.first:
            row = result.first()
            return [] if row is None else [row]
        return list(result.all())

    return read


def run_checks(ctx: AppContext, sub: Submission, read: Callable[[Query[Any]], Rows]) -> None:
    """Every step in order, its queries answered by `read` (a session: `session_reader`)."""
    for step in steps():
        loads = step.check(ctx, sub)
        if loads is None:
            continue
        query = next(loads, None)
        while query is not None:
            rows = read(query)
            try:
                query = loads.send(rows)
            except StopIteration:
                break


async def run_checks_async(
    ctx: AppContext, sub: Submission, read: Callable[[Query[Any]], Awaitable[Rows]]
) -> None:
    """`run_checks` with queries answered on an async connection: the same steps."""
    for step in steps():
        loads = step.check(ctx, sub)
        if loads is None:
            continue
        query = next(loads, None)
        while query is not None:
            rows = await read(query)
            try:
                query = loads.send(rows)
            except StopIteration:
                break


__all__ = [
    "CHECKS",
    "Query",
    "Step",
    "Submission",
    "array",
    "dependencies",
    "image",
    "qos",
    "run_checks",
    "run_checks_async",
    "session_reader",
    "steps",
    "workdir",
]
