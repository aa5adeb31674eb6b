"""Keep the sites/nodes tables in step with the loaded site description."""

from __future__ import annotations

from sqlalchemy.orm import Session

from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import NodeRow, SiteRow
from gpucenter.services.sites.config import LoadedSite
from gpucenter.services.sites.runtime import SiteRuntime


def register_sites(s: Session, runtimes: list[SiteRuntime]) -> int:
    """Create or update every site's rows from its description; return the first site's id."""
    ids = [_sync(s, rt.name, rt.loaded, rt.kind.value) for rt in runtimes]
    return ids[0]


def _sync(s: Session, name: str, loaded: LoadedSite, kind: str = "local") -> int:
    site = repo.site_by_name(s, name)
    if site is None:
        site = SiteRow(name=name, kind=kind)
        s.add(site)
        s.flush()
    site.kind = kind
    existing = {n.name: n for n in repo.nodes_of(s, site.id)}
    for node in loaded.site.nodes:
        row = existing.pop(node.name, None)
        if row is None:
            row = NodeRow(site_id=site.id, name=node.name)
            s.add(row)
        row.gpu_type = node.gpu_type
        row.gpu_count = node.gpu_count
        row.block = node.block
        row.virtual = node.name in loaded.virtual_nodes
    for gone in existing.values():
        # A node removed from the description keeps its row (jobs refer to it) but has no GPUs.
        gone.gpu_count = 0
    s.flush()
    return site.id


__all__ = [
    "register_sites",
]
