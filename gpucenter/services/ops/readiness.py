"""Readiness: can this server do its work, and if not, what exactly is wrong.

Besides the database and its migrations, each site's health as the scheduler leader last
saw it (`services.sites.health_record`): any process answers, whichever one leads. A site
that does not answer (slurmctld down) makes the server not ready, saying which site and
why; a site no leader has looked at for a while (no scheduler running) says so too.

A scheduler whose passes keep failing makes the server not ready as well: it answers
requests but starts and ends no job (a poisoned job once did exactly that while /readyz said
ready). The leader may be another process of the server (`serve --workers N`): its failures
come through the published metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from gpucenter.persistence import repositories as repo
from gpucenter.persistence.db import alembic_config
from gpucenter.services.context import AppContext
from gpucenter.services.ops.metrics import OperatorMetrics, gathered, metrics_dir
from gpucenter.services.sites.health_record import read_site_health

FAILING_PASSES_NOT_READY = 3
"""Passes failed in a row (in any process of this server) after which it is not ready: one
can fail on a passing hiccup (the database restarting); three in a row is a server that
schedules nothing."""


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def ping_database(ctx: AppContext) -> None:
    """One round trip to the database (`SELECT 1`); raises whatever reaching it raised, so
    that liveness fails loudly rather than answering "ok" without a database."""
    with ctx.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def check_readiness(ctx: AppContext, scheduler_role: str) -> list[Check]:
    checks: list[Check] = []
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = set(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:  # any failure to reach the database makes the server not ready
        return [Check("database", False, f"cannot reach the database: {exc.__class__.__name__}")]
    checks.append(Check("database", True, "reachable"))
    script = ScriptDirectory.from_config(alembic_config(str(ctx.engine.url)))
    heads = set(script.get_heads())
    if current == heads:
        checks.append(Check("migrations", True, "at the latest revision"))
    else:
        checks.append(
            Check(
                "migrations",
                False,
                f"database at {sorted(current) or 'no revision'}, code expects {sorted(heads)}; "
                "run 'gpucenter db upgrade'",
            )
        )
        return checks
    with ctx.sessions.begin() as s:
        site = repo.site_by_name(s, ctx.site.site.name)
        health = read_site_health(s, ctx.now())
    checks.append(
        Check("site", site is not None, "registered" if site else "site not registered yet")
    )
    for h in health:
        checks.append(Check(f"site {h.site}", h.ok, h.detail))
    checks.append(Check("scheduler", scheduler_role != "stopped", scheduler_role))
    # This process's loop, and the other live processes of this server (the leader may be
    # one of them); never the process-wide counters, which outlive a context.
    others = gathered(metrics_dir(ctx.settings), OperatorMetrics())
    failing, error = ctx.pass_health.failing, ctx.pass_health.last_error
    if others.failing_passes > failing:
        failing, error = others.failing_passes, others.last_pass_error
    if failing >= FAILING_PASSES_NOT_READY:
        checks.append(
            Check(
                "scheduling passes",
                False,
                f"the last {failing} scheduling passes failed ({error}); no job starts or "
                "ends until they work again",
            )
        )
    else:
        checks.append(Check("scheduling passes", True, "working"))
    return checks


__all__ = [
    "check_readiness",
    "ping_database",
]
