"""What a server process does before its first request, so that the first burst after a
start costs what later ones do.

Measured with bench/submit_load.py (issue 18): in the first second after a start, each API
worker resolved twenty clients' tokens at once, each in a thread of its own, and each thread
opened a new database connection (a PostgreSQL backend, with cold catalog caches) and
compiled the resolution's statements: submissions waited up to 0.6 s, against a few
milliseconds later. So at start-up the worker opens its pool's connections and runs the
token resolution's statements once on each.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from gpucenter.services.context import AppContext
from gpucenter.services.identity.signin import rehearse

log = logging.getLogger(__name__)


def warm_up(ctx: AppContext) -> int:
    """Open the engine's kept connections (held together, so that each is a new one) and
    rehearse a token resolution on each. Returns how many; a failure is logged, never
    raised: a cold start is slower, not wrong."""
    pool = ctx.engine.pool
    wanted = pool.size() if isinstance(pool, QueuePool) else 1
    held: list[Session] = []
    try:
        for _ in range(wanted):
            s = ctx.sessions()
            held.append(s)
            rehearse(s)
    except Exception:
        log.warning("warm-up at start failed; the first requests will open connections")
    finally:
        for s in held:
            s.rollback()
            s.close()
    return len(held)


__all__ = ["warm_up"]
