"""A Kubernetes site's periodic work on the scheduler leader: its namespace sync.

Registered for the Kubernetes kind in `gpucenter.services.scheduling.tasks.SITE_TASKS`, under
the common site-sync name (`periodic.site_sync_task`), so that a job which finds its
project's namespace or queue missing can ask for it at once, whatever the site's kind. It runs
every ``kubernetes_sync_interval_s`` (0: never) and applies only where the site's
``apply_sync`` says so; otherwise it logs what it would change.
"""

from __future__ import annotations

from gpucenter.services.context import AppContext
from gpucenter.services.kubernetes.settings import KubernetesSettings
from gpucenter.services.periodic import PeriodicTask, Schedule, site_sync_task
from gpucenter.services.sites.runtime import SiteRuntime

__all__ = ["kubernetes_site_tasks"]


def kubernetes_site_tasks(ctx: AppContext, rt: SiteRuntime) -> list[PeriodicTask]:
    """The namespace sync of one Kubernetes site (its settings read at each run, so that an
    operator's change to ``apply_sync`` takes effect at the next turn)."""
    if not isinstance(rt.settings, KubernetesSettings):
        return []

    def sync(ctx: AppContext) -> str:
        from gpucenter.services.kubernetes.sync import scheduled_sync

        settings = rt.settings
        if not isinstance(settings, KubernetesSettings):
            return ""
        changes = scheduled_sync(ctx.sessions, settings, ctx.now())
        if not changes:
            return ""
        verb = "applied" if settings.apply_sync else "planned (apply_sync is off)"
        return f"{len(changes)} namespace change(s) {verb}"

    every = ctx.settings.kubernetes_sync_interval_s
    return [
        PeriodicTask(
            site_sync_task(rt.name), Schedule(every_s=every), sync, min(60.0, every or 60.0)
        )
    ]
