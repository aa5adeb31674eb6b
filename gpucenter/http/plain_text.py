"""Refuse NUL and other control characters in what any route is sent (see `domain.text`).

One dependency on the whole app, before any route's own parsing: the query string, path
parameters, JSON bodies and form fields (file uploads aside) are checked, and the first bad
field is named in a 422 (problem+json for the API, an error page for the portal). Job
submissions are also checked inside the submission pipeline, which the fast path runs
without routing.
"""

from __future__ import annotations

import json
from typing import cast

from fastapi import Request
from starlette.requests import HTTPConnection

from gpucenter.domain.sessions import is_session_path
from gpucenter.domain.text import refuse_control

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def refuse_control_characters(connection: HTTPConnection) -> None:
    """The check; not for what an interactive session is sent (`web.session_proxy` forwards
    it untouched: a notebook's JSON holds terminal colours as escaped control characters)
    nor for WebSockets (nothing of theirs reaches a route's parsing)."""
    if connection.scope["type"] != "http" or is_session_path(connection.url.path):
        return
    request = cast(Request, connection)
    for key, value in request.query_params.multi_items():
        refuse_control({key: value})
    refuse_control(dict(request.path_params))
    if request.method not in _BODY_METHODS:
        return
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json" or kind.endswith("+json"):
        body = await request.body()
        # In JSON a control character is an escape (\u00XX) or, for U+0080-U+009F, raw
        # UTF-8 starting 0xC2; bodies without either (nearly all) are not parsed twice.
        if b"\\u" in body or b"\xc2" in body:
            try:
                data = json.loads(body)
            except ValueError:
                return  # not JSON: the route's own parsing answers that
            refuse_control(data)
    elif kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        for key, item in form.multi_items():
            if isinstance(item, str):
                refuse_control({key: item})
