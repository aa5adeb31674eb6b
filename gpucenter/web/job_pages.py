"""The jobs pages: my jobs and my projects' jobs, submitting one, and one job's detail.

Routes are thin: they parse the form, call services/jobs.py (the same code the REST API and
the CLI use, so the rules are the same everywhere) and render. The submit form checks the
shape of what was typed first, so that several mistakes are reported at once next to their
fields; the service then validates against the site and the project, and its error is put
next to the field it names. Nothing is written unless everything is valid.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gpucenter.auth.permissions import Caller, Permission, can_cancel_job
from gpucenter.domain.durations import parse_duration
from gpucenter.domain.errors import Conflict, ValidationError
from gpucenter.domain.jobs import JobState
from gpucenter.domain.templates import JobTemplate
from gpucenter.http import csrf
from gpucenter.http.deps import Ctx, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.services.context import AppContext
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs import templates
from gpucenter.services.jobs.submission import QOS_NAMES, JobForm
from gpucenter.services.ops import portal_queries
from gpucenter.services.scheduling import pending
from gpucenter.web import job_labels, render
from gpucenter.web.i18n import N_

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 25
LOG_TAIL_BYTES = 64 * 1024
# The service names some fields differently from the form (time_limit is typed as "time",
# a script goes into the command box); everything else it names is a form field already.
_FIELD_OF = {"time_limit": "time", "time_limit_s": "time", "script": "command"}
SUBMITTED = N_("Job submitted.")
CANCEL_REQUESTED = N_("Cancel requested.")
ALREADY_ENDED = N_("The job has already ended.")
_PLAIN_FIELDS = ("project", "name", "command", "gpu_type", "gpus_per_node", "nodes", "time", "qos")


async def _posted(request: Request) -> dict[str, str]:
    """The posted form as plain strings (a template's fields have names known only then)."""
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


Posted = Annotated[dict[str, str], Depends(_posted)]


def _to_job(job_id: int, flash: str) -> RedirectResponse:
    """After a form worked: back to the job, with a message (an English msgid) to show."""
    return RedirectResponse(f"/jobs/{job_id}?flash={quote(flash)}", status_code=303)


def _poke(request: Request) -> None:
    """Wake the scheduler so that a submitted or cancelled job moves without waiting."""
    loop = getattr(request.app.state, "loop", None)
    if loop is not None:
        loop.poke()


@router.get("/jobs", response_class=HTMLResponse, dependencies=[requires_web(Permission.JOBS_READ)])
def job_list(
    ctx: Ctx,
    request: Request,
    caller: WebCaller,
    state: Annotated[str, Query(max_length=20)] = "",
    project: Annotated[str, Query(max_length=100)] = "",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    """Newest first, a page at a time (keyset: the next page starts below the last id)."""
    states = [JobState(state)] if state in JobState.__members__ else []
    page = jobs.list_page(
        ctx, caller, states=states, project=project or None, limit=PAGE_SIZE, cursor=cursor
    )
    names = portal_queries.project_name_map(ctx, sorted({j.project_id for j in page.items}))
    filters = {"state": state if states else "", "project": project}
    query = urlencode({k: v for k, v in filters.items() if v})
    return render.page(
        request,
        ctx,
        "jobs/list.html",
        caller,
        jobs=page.items,
        next_cursor=page.next_cursor,
        project_names=names,
        projects=portal_queries.project_names(ctx, caller),
        states=[(s.value, job_labels.state_label(s)) for s in JobState],
        filters=filters,
        query=query,
        first_page=cursor is None,
        state_label=job_labels.state_label,
    )


def _form_page(
    request: Request,
    ctx: AppContext,
    caller: Caller,
    form: render.FormState,
    template: JobTemplate | None,
    status: int = 200,
) -> HTMLResponse:
    return render.page(
        request,
        ctx,
        "jobs/new.html",
        caller,
        status,
        form=form,
        template=template,
        templates=templates.list_templates(ctx),
        projects=[("", render.t(request, "Choose a project"))]
        + [(n, n) for _, n in portal_queries.project_names(ctx, caller)],
        gpu_types=[(t, t) for t in sorted(ctx.site.site.gpu_types)],
        qos_options=[(q, render.t(request, job_labels.QOS_LABELS[q])) for q in QOS_NAMES],
    )


def _template(ctx: AppContext, name: str) -> JobTemplate | None:
    return next((t for t in templates.list_templates(ctx) if t.name == name), None)


@router.get(
    "/jobs/new", response_class=HTMLResponse, dependencies=[requires_web(Permission.JOBS_SUBMIT)]
)
def new_job(
    ctx: Ctx,
    request: Request,
    caller: WebCaller,
    template: Annotated[str, Query(max_length=64)] = "",
    project: Annotated[str, Query(max_length=100)] = "",
) -> HTMLResponse:
    chosen = _template(ctx, template) if template else None
    values = {"project": project, "gpus_per_node": "1", "nodes": "1", "time": "1h"}
    mine = portal_queries.project_names(ctx, caller)
    if not project and len(mine) == 1:
        values["project"] = mine[0][1]
    if chosen is not None:
        values["template"] = chosen.name
        for f in chosen.fields:
            if f.default is not None:
                values[f"fields.{f.name}"] = str(f.default)
    else:
        values["gpu_type"] = sorted(ctx.site.site.gpu_types)[0]
    return _form_page(request, ctx, caller, render.FormState.of(values), chosen)


def _check_shape(request: Request, form: render.FormState, template: JobTemplate | None) -> None:
    """Mistakes that need no site or database to see, all reported at once."""
    if not form.value("project"):
        form.error("project", render.t(request, "Choose the project to charge."))
    if template is None:
        if not form.value("command").strip():
            form.error("command", render.t(request, "Enter the command or script to run."))
        for name, high in (("gpus_per_node", 1024), ("nodes", 10_000)):
            text = form.value(name).strip()
            if text and (not text.isdigit() or not 1 <= int(text) <= high):
                message = render.t(request, "Enter a whole number from %(low)s to %(high)s.")
                form.error(name, message % {"low": 1, "high": high})
        if form.value("time").strip():
            try:
                parse_duration(form.value("time"))
            except ValidationError:
                form.error("time", render.t(request, "Enter a time such as 30m, 2h or 1:30:00."))
    else:
        for f in template.fields:
            text = form.value(f"fields.{f.name}").strip()
            if f.required and not text and f.default is None:
                form.error(f"fields.{f.name}", render.t(request, "This field is required."))
            elif text and f.type == "int":
                low = f.minimum if f.minimum is not None else 0
                high = f.maximum if f.maximum is not None else 10**9
                if not text.lstrip("-").isdigit() or not low <= int(text) <= high:
                    message = render.t(request, "Enter a whole number from %(low)s to %(high)s.")
                    form.error(f"fields.{f.name}", message % {"low": low, "high": high})


def _job_form(form: render.FormState, template: JobTemplate | None) -> JobForm:
    def given(name: str) -> str | None:
        text = form.value(name).strip()
        return text or None

    def number(name: str) -> int | None:
        text = given(name)
        return int(text) if text else None

    if template is not None:
        fields = {
            f.name: form.value(f"fields.{f.name}").strip()
            for f in template.fields
            if form.value(f"fields.{f.name}").strip()
        }
        return JobForm(project=given("project"), template=template.name, fields=fields)
    command = form.value("command").replace("\r\n", "\n")
    is_script = command.startswith("#!") or "\n" in command.strip()
    return JobForm(
        project=given("project"),
        command=None if is_script else command.strip(),
        script=command if is_script else None,
        name=given("name"),
        gpu_type=given("gpu_type"),
        gpus_per_node=number("gpus_per_node"),
        nodes=number("nodes"),
        time=given("time"),
        qos=given("qos"),
    )


@router.post("/jobs/new", dependencies=[requires_web(Permission.JOBS_SUBMIT)])
def submit_job(ctx: Ctx, request: Request, caller: WebCaller, posted: Posted) -> Response:
    csrf.check(request, posted.get(csrf.FIELD, ""))
    template_name = posted.get("template", "")
    template = _template(ctx, template_name) if template_name else None
    keep = set(_PLAIN_FIELDS) | {"template"}
    if template is not None:
        keep |= {f"fields.{f.name}" for f in template.fields}
    form = render.FormState.of({k: v for k, v in posted.items() if k in keep})
    if template_name and template is None:
        form.error("template", render.t(request, "That template is no longer published."))
    _check_shape(request, form, template)
    if form.ok:
        try:
            row = jobs.submit(ctx, caller, _job_form(form, template))
        except (ValidationError, Conflict) as exc:
            name = exc.field if isinstance(exc, ValidationError) else "project"
            name = _FIELD_OF.get(name, name)
            if name not in keep:
                name = "project" if template is not None else "command"
            form.error(name, render.error_text(request, exc))
        else:
            _poke(request)
            return _to_job(row.id, SUBMITTED)
    return _form_page(request, ctx, caller, form, template, status=422)


@router.get(
    "/jobs/{job_id}",
    response_class=HTMLResponse,
    dependencies=[requires_web(Permission.JOBS_READ)],
)
def job_detail(ctx: Ctx, request: Request, caller: WebCaller, job_id: int) -> HTMLResponse:
    """The job as it is now, with its log so far; a script then follows it live."""
    row = jobs.get_visible(ctx, caller, job_id)
    state = JobState(row.state)
    tail = jobs.log_tail(ctx, caller, job_id, LOG_TAIL_BYTES)
    factors = row.priority_factors or {}
    names = portal_queries.project_name_map(ctx, [row.project_id])
    waiting = pending.explain_pending(ctx, caller, job_id) if state is JobState.PENDING else None
    return render.page(
        request,
        ctx,
        "jobs/detail.html",
        caller,
        job=row,
        state=state,
        project_name=names.get(row.project_id, str(row.project_id)),
        state_label=job_labels.state_label(row.state),
        reason_label=job_labels.reason_label(row.reason) if row.reason else "",
        pending=waiting,
        factors=[
            (label, factors.get(key))
            for key, label in job_labels.FACTOR_LABELS.items()
            if key in factors
        ],
        priority=factors.get("priority"),
        log=tail.chunk.decode("utf-8", errors="replace"),
        log_truncated=tail.start > 0,
        log_offset=tail.next_offset,
        charge=portal_queries.job_charge_gpu_hours(ctx, caller, row),
        can_cancel=not state.is_terminal and can_cancel_job(caller, row.user_id, row.project_id),
        live_labels={
            **{s.value: render.t(request, job_labels.state_label(s)) for s in JobState},
            **{f"reason:{k}": render.t(request, v) for k, v in job_labels.REASON_LABELS.items()},
        },
    )


@router.post("/jobs/{job_id}/cancel", dependencies=[requires_web(Permission.JOBS_CANCEL)])
def cancel_job(
    ctx: Ctx,
    request: Request,
    caller: WebCaller,
    job_id: int,
    posted: Posted,
) -> Response:
    csrf.check(request, posted.get(csrf.FIELD, ""))
    try:
        jobs.cancel(ctx, caller, job_id)
    except Conflict:
        return _to_job(job_id, ALREADY_ENDED)
    _poke(request)
    return _to_job(job_id, CANCEL_REQUESTED)
