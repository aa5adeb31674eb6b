"""Several sites behind one `Dispatcher`: each job goes to the site that owns its nodes.

The core schedules all sites in one snapshot (each node carries its site, and a multi-node
job is never split across sites), so by the time a job is dispatched its placement already
names the site that can start it first. A job that no site can start now is not handed to
any site: the core plans it (for the top blocked jobs) on the nodes that free up first, by
the time limits of the jobs running there, whichever site they are on, and it is dispatched
there when they do. The estimate is gpucenter's own: jobs a Slurm cluster runs that
gpucenter did not submit, and what Slurm itself plans, are not part of it.

The broker only has to route: `submit` to the dispatcher of the placement's site, `cancel`
to whichever site watches the job, `poll` to all of them. The scheduler loop polls the sites
one by one itself (so that one site being down does not stop the others); the broker is
what the rest of the server sees. It is a `Dispatcher` too: its capabilities are those every
one of its sites has (the core may place a job on any of them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from gpucenter.dispatch.base import (
    Dispatcher,
    DispatchError,
    Launched,
    LaunchRequest,
    SiteCapabilities,
    SiteKind,
    SiteUnavailable,
    StateChange,
)
from gpucenter.domain.clock import Instant
from gpucenter.domain.ids import JobId

__all__ = ["SiteBroker"]

_log = logging.getLogger(__name__)


class SiteBroker:
    """Routes jobs to the dispatcher of the site their placement is on."""

    def __init__(self, sites: Mapping[str, Dispatcher], node_site: Mapping[str, str]) -> None:
        unknown = sorted(set(node_site.values()) - set(sites))
        if unknown:
            raise ValueError(f"nodes of sites without a dispatcher: {unknown}")
        self._sites = dict(sites)
        self._node_site = dict(node_site)
        every = [d.capabilities for d in self._sites.values()]
        self._capabilities = SiteCapabilities(
            SiteKind.BROKER,
            containers=all(c.containers for c in every),
            adopts_after_restart=False,  # see `adopt`
            reports_utilisation=all(c.reports_utilisation for c in every),
            enforces_time_limit=all(c.enforces_time_limit for c in every),
        )

    @property
    def capabilities(self) -> SiteCapabilities:
        return self._capabilities

    @property
    def unavailable(self) -> str:
        """The sites whose last poll could not reach them, and why."""
        return "; ".join(f"{n}: {d.unavailable}" for n, d in self._sites.items() if d.unavailable)

    @property
    def sites(self) -> Mapping[str, Dispatcher]:
        return self._sites

    def site_of(self, request: LaunchRequest) -> str:
        """The site a placement is on; a placement over several sites is refused."""
        names = {self._node_site.get(p.node) for p in request.placement}
        if len(names) != 1 or None in names:
            raise DispatchError(
                f"job {request.job_id}: placement {[p.node for p in request.placement]} "
                "is not on exactly one known site"
            )
        (name,) = names
        assert name is not None
        return name

    def submit(self, request: LaunchRequest) -> Launched:
        return self._sites[self.site_of(request)].submit(request)

    def cancel(self, job_id: JobId) -> None:
        for dispatcher in self._watching(job_id):
            dispatcher.cancel(job_id)

    def poll(self) -> Sequence[StateChange]:
        """Every site's changes; raises SiteUnavailable only when no site answered."""
        changes: list[StateChange] = []
        errors: list[str] = []
        for name, dispatcher in self._sites.items():
            try:
                changes.extend(dispatcher.poll())
            except SiteUnavailable as exc:
                _log.warning("site %s unavailable: %s", name, exc)
                errors.append(f"{name}: {exc}")
        if errors and len(errors) == len(self._sites):
            raise SiteUnavailable("; ".join(errors))
        return changes

    def adopt(
        self,
        job_id: JobId,
        external_id: str,
        started_at: Instant,
        time_limit_s: int,
        stderr_path: str | None,
    ) -> bool:
        """False: an external id does not say which site it is from. Recovery after a
        restart adopts through each site's own dispatcher instead (it knows the job's site)."""
        del job_id, external_id, started_at, time_limit_s, stderr_path
        return False

    def running_job_ids(self) -> frozenset[JobId]:
        ids: set[JobId] = set()
        for dispatcher in self._sites.values():
            ids |= dispatcher.running_job_ids()
        return frozenset(ids)

    def detach(self) -> None:
        for dispatcher in self._sites.values():
            dispatcher.detach()

    def shutdown(self) -> None:
        for dispatcher in self._sites.values():
            dispatcher.shutdown()

    def _watching(self, job_id: JobId) -> list[Dispatcher]:
        found = [d for d in self._sites.values() if job_id in d.running_job_ids()]
        return found or list(self._sites.values())
