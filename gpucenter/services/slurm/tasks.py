"""A Slurm site's periodic work on the scheduler leader: its accounts sync and usage ingest.

Registered for the Slurm kind in `gpucenter.services.scheduling.tasks.SITE_TASKS`. The sync
runs every ``slurm_sync_interval_s`` and at once (within its minimum gap) when a job found
its account or owner missing at the site (`scheduling.starts.site_sync_task`); the ingest
every ``usage_ingest_interval_s``, in a fenced transaction with its cursor.
"""

from __future__ import annotations

from gpucenter.dispatch.slurm.dispatcher import cluster_name
from gpucenter.services.context import AppContext
from gpucenter.services.periodic import PeriodicTask, Schedule, site_sync_task
from gpucenter.services.sites.runtime import SiteRuntime
from gpucenter.services.sites.slurm_settings import SlurmSettings

__all__ = ["slurm_site_tasks", "usage_task_name"]


def usage_task_name(site: str) -> str:
    return f"slurm-usage:{site}"


def slurm_site_tasks(ctx: AppContext, rt: SiteRuntime) -> list[PeriodicTask]:
    """The sync and the usage ingest of one Slurm site."""
    settings = rt.settings
    if not isinstance(settings, SlurmSettings):
        return []
    name = rt.name

    def sync(ctx: AppContext) -> str:
        from gpucenter.services.slurm.sync import sync_site

        outcome = sync_site(ctx.sessions, settings, ctx.now(), site=name)
        return outcome.summary() if outcome.commands or outcome.problems else ""

    def usage(ctx: AppContext) -> str:
        from gpucenter.services.slurm.ingest import ingest_site

        cli = settings.cli()
        cluster = settings.cluster or cluster_name(cli)
        with ctx.fenced() as s:
            report = ingest_site(
                s,
                cli,
                cluster,
                settings.top_account,
                ctx.now(),
                foreign_jobs=settings.foreign_jobs,
                marker_key=settings.marker_key(),
            )
        return report.summary()

    every_sync = ctx.settings.slurm_sync_interval_s
    every_usage = ctx.settings.usage_ingest_interval_s
    return [
        PeriodicTask(
            site_sync_task(name), Schedule(every_s=every_sync), sync, min(60.0, every_sync or 60.0)
        ),
        PeriodicTask(
            usage_task_name(name),
            Schedule(every_s=every_usage),
            usage,
            min(60.0, every_usage or 60.0),
        ),
    ]
