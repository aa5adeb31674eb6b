"""A job's live state and log for the browser, as server-sent events.

The same stream as the API's /api/v1/jobs/{id}/events (services/events.py), but
authenticated by the session cookie: EventSource cannot send an Authorization header, and
the API never accepts cookies. It only reads, so it needs no CSRF token; the cookie is
SameSite, and the visibility check runs before the first byte and on every poll, so another
tenant gets a 404 and nothing else.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from gpucenter.auth.permissions import Permission
from gpucenter.http.deps import Ctx, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.events import job_events
from gpucenter.services.jobs.views import JobView
from gpucenter.web import i18n

router = APIRouter(include_in_schema=False)


@router.get("/jobs/{job_id}/events", dependencies=[requires_web(Permission.JOBS_READ)])
def job_event_stream(
    ctx: Ctx,
    request: Request,
    caller: WebCaller,
    job_id: int,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> StreamingResponse:
    """`state` on each change, `log` as output is written (from `offset`), `end` at the end;
    a state's detail is in the reader's language."""
    jobs.get_visible(ctx, caller, job_id)  # 404 before the stream starts
    lang = i18n.language_of(request)
    zone = i18n.display_zone(ctx.settings.display_timezone)

    def detail(view: JobView) -> str:
        return i18n.render_message(lang, view.reason_message, zone) or view.reason_detail

    return StreamingResponse(
        job_events(ctx, caller, job_id, "stdout", offset, detail),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
