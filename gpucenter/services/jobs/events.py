"""A job's life as server-sent events: state changes and log output until it ends."""

from __future__ import annotations

import codecs
import json
import time
from collections.abc import Callable, Iterator

from gpucenter.auth.permissions import Caller
from gpucenter.domain.errors import PermissionDenied
from gpucenter.domain.jobs import JobState
from gpucenter.services.context import AppContext
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.views import JobView

POLL_S = 0.3
HEARTBEAT_S = 15.0
MAX_STREAM_S = 24 * 3600.0


def _event(name: str, data: str) -> bytes:
    lines = data.split("\n")
    return (f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n").encode()


def job_events(
    ctx: AppContext,
    caller: Caller,
    job_id: int,
    stream: str = "stdout",
    offset: int = 0,
    detail_of: Callable[[JobView], str] | None = None,
) -> Iterator[bytes]:
    """Yield SSE frames. Log data is JSON-encoded text so that any byte sequence survives.

    A `state` frame carries the reason's English `detail` and its `message` (code and
    parameters); `detail_of` lets the portal put the detail in its reader's language."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    last_state = ""
    last_beat = time.monotonic()
    deadline = last_beat + MAX_STREAM_S
    while time.monotonic() < deadline:
        row = jobs.get_visible(ctx, caller, job_id, with_env=False)
        if row.state != last_state:
            last_state = row.state
            payload = {
                "state": row.state,
                "reason": row.reason,
                "detail": detail_of(row) if detail_of else row.reason_detail,
                "message": row.reason_message.to_json() if row.reason_message else None,
            }
            yield _event("state", json.dumps(payload))
        ended = JobState(row.state).is_terminal
        try:
            chunk, offset, finished = jobs.read_log(ctx, caller, job_id, stream, offset)
        except PermissionDenied:  # a co-member's job in a project that does not share
            chunk, finished = b"", True
        if chunk:
            text = decoder.decode(chunk)
            yield _event("log", json.dumps({"text": text, "offset": offset}))
            last_beat = time.monotonic()
            continue
        if ended and finished:
            rest = decoder.decode(b"", final=True)  # a sequence cut short at the very end
            if rest:
                yield _event("log", json.dumps({"text": rest, "offset": offset}))
            yield _event("end", json.dumps({"state": row.state, "exit_code": row.exit_code}))
            return
        if time.monotonic() - last_beat > HEARTBEAT_S:
            yield b": keep-alive\n\n"
            last_beat = time.monotonic()
        time.sleep(POLL_S)


__all__ = [
    "job_events",
]
