"""The scheduler leader's periodic tasks: the centre's own, and each site kind's.

`periodic_tasks` lists them for a context: allocation states and budget alerts every minute,
the awards' aftercare every minute (lapsed offers, report reminders and holds, reclaims whose
appeal window closed, and the awards' monthly check, each idempotent), the use-it-or-lose-it
notice to projects once per `Settings.use_check` period, and for every site the
tasks its kind contributes through `SITE_TASKS` (a Slurm site: its accounts sync and its
usage ingest; a Kubernetes site: its namespace sync). A new site kind that needs periodic
work adds one entry there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from gpucenter.dispatch.base import SiteKind
from gpucenter.services.context import AppContext
from gpucenter.services.periodic import Calendar, PeriodicTask, Schedule
from gpucenter.services.sites.runtime import SiteRuntime

__all__ = ["ALLOCATION_STATES", "AWARD_AFTERCARE", "SITE_TASKS", "USE_CHECK", "periodic_tasks"]

log = logging.getLogger(__name__)
ALLOCATION_STATES = "allocation-states"
USE_CHECK = "use-check"
AWARD_AFTERCARE = "award-aftercare"
EVERY_MINUTE = Schedule(every_s=60.0)


def _refresh_allocation_states(ctx: AppContext) -> str:
    """Mark allocations exhausted or expired (and back) as usage and time move on, raise
    budget alerts (each threshold once) and send the e-mails SMTP is configured for."""
    from gpucenter.services.accounting.budgets import SmtpMailer, check_budgets, deliver_email
    from gpucenter.services.programmes.awards import refresh_allocation_states

    with ctx.fenced() as s:
        changed = refresh_allocation_states(s, ctx.now())
    with ctx.fenced() as s:
        alerts = check_budgets(s, ctx.now())
    mailer = SmtpMailer.from_env()
    if mailer is not None:
        deliver_email(ctx.sessions, mailer, ctx.now(), mailer.domain)
    return (
        f"{changed} allocation states changed, {len(alerts)} budget alerts"
        if (changed or alerts)
        else ""
    )


def _award_aftercare(ctx: AppContext) -> str:
    """Each step in its own transaction (see `awards.periodic`); fenced like every other
    write of the leader's, so that a deposed leader's late tick changes nothing."""
    from gpucenter.services.awards.periodic import run_periodic

    tick = run_periodic(ctx.sessions, ctx.now(), begin=ctx.fenced)
    done = tick.lapsed or tick.overdue or tick.reclaimed or tick.monthly
    return str(tick) if done or tick.failed else ""


def _use_check(ctx: AppContext) -> str:
    from gpucenter.services.accounting.useit import periodic_use_check

    with ctx.fenced() as s:
        flagged = periodic_use_check(s, ctx.now())
    return f"{len(flagged)} under-used awards flagged to their projects"


def _kubernetes_tasks(ctx: AppContext, rt: SiteRuntime) -> list[PeriodicTask]:
    from gpucenter.services.kubernetes.tasks import kubernetes_site_tasks

    return kubernetes_site_tasks(ctx, rt)


def _slurm_tasks(ctx: AppContext, rt: SiteRuntime) -> list[PeriodicTask]:
    from gpucenter.services.slurm.tasks import slurm_site_tasks

    return slurm_site_tasks(ctx, rt)


SITE_TASKS: Mapping[SiteKind, Callable[[AppContext, SiteRuntime], list[PeriodicTask]]] = {
    SiteKind.SLURM: _slurm_tasks,
    SiteKind.KUBERNETES: _kubernetes_tasks,
}
"""Periodic tasks each site kind contributes, per site (name them after the site)."""


def periodic_tasks(ctx: AppContext) -> list[PeriodicTask]:
    """Every periodic task of this server's leader."""
    tasks = [
        PeriodicTask(ALLOCATION_STATES, EVERY_MINUTE, _refresh_allocation_states),
        PeriodicTask(AWARD_AFTERCARE, EVERY_MINUTE, _award_aftercare),
        PeriodicTask(
            USE_CHECK, Schedule(calendar=Calendar(ctx.settings.use_check)), _use_check, 3600.0
        ),
    ]
    for rt in ctx.site_runtimes():
        contribute = SITE_TASKS.get(rt.kind)
        if contribute is not None:
            tasks.extend(contribute(ctx, rt))
    return tasks
