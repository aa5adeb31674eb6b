"""Domain errors mapped once to RFC 9457 problem+json responses that leak no internals."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gpucenter.domain.errors import (
    Conflict,
    InvalidTransition,
    NotFound,
    OutOfRange,
    PermissionDenied,
    Unauthenticated,
    ValidationError,
)
from gpucenter.domain.messages import Message
from gpucenter.http.security import BodyTooLarge
from gpucenter.services.identity.ratelimit import TooManyRequests

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"


class LoginRequired(Unauthenticated):
    """A browser page was asked for without a valid session: send the browser to sign in."""


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    all_headers = dict(headers or {})
    if status == 401:
        all_headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=all_headers)


def _coded(exc: Exception) -> dict[str, Any]:
    """`code` and `params` members for an error that carries its text as a message code:
    a client renders them in its user's language (the CLI does), else shows `detail`."""
    message = getattr(exc, "coded", None)
    if not isinstance(message, Message):
        return {}
    return message.to_json()


def _validation(exc: ValidationError) -> JSONResponse:
    return problem(
        422,
        "Invalid input",
        str(exc),
        errors=[{"field": exc.field, "message": exc.message}],
        **_coded(exc),
    )


def request_validation_problem(errors: Sequence[Mapping[str, Any]]) -> JSONResponse:
    """422 for pydantic errors whose `loc` starts with where the value came from ("body")."""
    found = [
        {
            "field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
            "message": err.get("msg", "invalid"),
        }
        for err in errors
    ]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in found)
    return problem(422, "Invalid input", detail, errors=found)


def _request_validation(exc: RequestValidationError) -> JSONResponse:
    return request_validation_problem(exc.errors())


def _not_found(exc: NotFound) -> JSONResponse:
    return problem(404, "Not found", str(exc), **_coded(exc))


def _unauth(exc: Unauthenticated) -> JSONResponse | RedirectResponse:
    if isinstance(exc, LoginRequired):
        return RedirectResponse("/login", status_code=303)
    return problem(401, "Unauthenticated", str(exc), **_coded(exc))


def _too_many(exc: TooManyRequests) -> JSONResponse:
    return problem(
        429,
        "Too many requests",
        str(exc),
        {"Retry-After": str(exc.retry_after_s)},
        **_coded(exc),
    )


def _too_large(exc: BodyTooLarge) -> JSONResponse:
    return problem(413, "Payload too large", "the request body is too large")


def _forbidden(exc: PermissionDenied) -> JSONResponse:
    return problem(403, "Forbidden", str(exc), **_coded(exc))


def _conflict(exc: Conflict | InvalidTransition) -> JSONResponse:
    return problem(409, "Conflict", str(exc), **_coded(exc))


def _http(exc: StarletteHTTPException) -> JSONResponse:
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() == "allow"}
    return problem(exc.status_code, str(exc.detail), str(exc.detail), headers)


def _out_of_range(exc: Exception) -> JSONResponse:
    # An id or number the database cannot even store: a safety net under the schemas'
    # own limits, so that no input reaches a 500.
    return problem(422, "Invalid input", "a number in the request is out of range")


# Exception type -> response, looked up along the exception's MRO as Starlette does. One
# table serves the app's handlers and the job-submission fast path (fast_submit.py), so
# both answer an error with the same status, title and body.
_RENDERERS: dict[type[Exception], Callable[[Any], Response]] = {
    ValidationError: _validation,
    RequestValidationError: _request_validation,
    NotFound: _not_found,
    Unauthenticated: _unauth,
    TooManyRequests: _too_many,
    BodyTooLarge: _too_large,
    PermissionDenied: _forbidden,
    Conflict: _conflict,
    InvalidTransition: _conflict,
    StarletteHTTPException: _http,
    OverflowError: _out_of_range,
    OutOfRange: _out_of_range,  # the database's data errors, raised as this (persistence.db)
}


def response_for(exc: Exception) -> Response | None:
    """The response the app's handlers give `exc`; None for an unexpected error (a 500,
    answered by the outermost error middleware, which also logs it)."""
    for cls in type(exc).__mro__:
        render = _RENDERERS.get(cls)
        if render is not None:
            return render(exc)
    return None


def install(app: FastAPI) -> None:
    for exc_type in _RENDERERS:
        app.add_exception_handler(exc_type, _handler)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "Internal error", "the server could not complete the request")


async def _handler(_: Request, exc: Exception) -> Response:
    response = response_for(exc)
    assert response is not None  # registered only for the types of _RENDERERS
    return response
