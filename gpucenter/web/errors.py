"""Errors on portal pages come back as pages, in the reader's language, not as JSON.

The API's handlers (api/errors.py) turn domain errors into problem+json. A browser that asked
for a portal page gets the same status code with an HTML page instead, with the navigation
of whoever is signed in, so a "not found" or "not allowed" is a page people can act on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from gpucenter.http.deps import SESSION_COOKIE
from gpucenter.services.identity import sessions
from gpucenter.web import render
from gpucenter.web.i18n import N_

Handler = Callable[[Request, Any], Any]

_HEADINGS = {
    400: N_("The request was not understood"),
    403: N_("Not allowed"),
    404: N_("Not found"),
    409: N_("That cannot be done now"),
    413: N_("Too large"),
    422: N_("Some input is not valid"),
    429: N_("Too many requests"),
    500: N_("Something went wrong"),
}


def _wrap(original: Handler) -> Handler:
    async def handler(request: Request, exc: Exception) -> Response:
        produced = original(request, exc)
        response: Response = produced if isinstance(produced, Response) else await produced
        if not render.wants_html(request) or response.status_code < 400:
            return response
        ctx = request.app.state.ctx
        caller = sessions.resolve(ctx, request.cookies.get(SESSION_COOKIE))
        status = response.status_code
        heading = render.t(request, _HEADINGS.get(status, _HEADINGS[400]))
        # Internal errors say nothing about internals; the others explain themselves.
        if status >= 500:
            detail = render.t(request, "The server could not complete the request.")
        else:
            detail = render.error_text(request, exc, beside_field=False) or heading
        return render.page(
            request, ctx, "error.html", caller, status, heading=heading, detail=detail
        )

    return handler


def install(app: FastAPI) -> None:
    """Wrap every installed exception handler (call after api.errors.install)."""
    for key, original in list(app.exception_handlers.items()):
        app.exception_handlers[key] = _wrap(original)
