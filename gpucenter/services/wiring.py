"""The system wired once: settings to a database, sites, dispatchers and an `AppContext`.

Which sites this server drives, and with which dispatcher: settings to `SiteRuntime`s.

Two ways to say it:

- No sites file (``GPUCENTER_SITES_FILE`` empty): one site. ``GPUCENTER_DISPATCHER=local``
  (the default) runs jobs as local processes on the nodes of ``GPUCENTER_SITE_FILE``;
  ``GPUCENTER_DISPATCHER=slurm`` hands them to the Slurm cluster of ``GPUCENTER_SLURM_*``
  (``CONF`` for its slurm.conf, ``CLUSTER``, ``PARTITION``, ``LOG_DIR``...).
- A sites file, for several sites (one Slurm cluster per site, a local one for a lab)::

      sites:
        - name: alpha              # gpucenter's name for the site
          kind: slurm
          slurm:                   # the GPUCENTER_SLURM_* settings, lower case, no prefix
            conf: /etc/slurm/slurm.conf
            cluster: alpha
            log_dir: /shared/gpucenter/alpha
        - name: lab
          kind: local
          site_file: lab.yaml      # its nodes (local sites; optional for Slurm sites)

  The settings of a site in the file are only those written there (the environment's
  GPUCENTER_SLURM_* are not mixed in: two sites must never share one by accident).

A Slurm site's nodes are read from ``sinfo`` when the server starts; if the controller does
not answer then, the nodes registered in the database last time are used (the server starts,
and the site's jobs wait until it answers). Node names must be unique over all sites: the
core's placement names nodes, and the broker routes a job by them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.config import Settings
from gpucenter.core import DEFAULT_POLICIES, Policies
from gpucenter.core.fairshare import FAIR_TREE
from gpucenter.core.fairshare_classic import CLASSIC
from gpucenter.dispatch.base import Dispatcher, DispatchError
from gpucenter.dispatch.broker import SiteBroker
from gpucenter.domain.clock import Clock, SystemClock
from gpucenter.domain.cluster import Node, Site
from gpucenter.domain.errors import ValidationError
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.db import make_engine, session_factory
from gpucenter.services.context import AppContext
from gpucenter.services.identity.audit_keys import AuditFiles
from gpucenter.services.sites.config import LoadedSite, load_site
from gpucenter.services.sites.health import SiteHealth
from gpucenter.services.sites.registry import register_sites
from gpucenter.services.sites.runtime import SiteRuntime
from gpucenter.services.sites.slurm_settings import SlurmSettings
from gpucenter.services.slurm.sync import make_slurm_dispatcher

__all__ = [
    "SiteSpec",
    "build_context",
    "build_sites",
    "combine",
    "ensure_site",
    "load_site_specs",
    "slurm_site",
]

log = logging.getLogger(__name__)
_KINDS = ("local", "slurm")
# A prefix no environment sets: site settings from a file take nothing from the environment.
_NO_ENV = "GPUCENTER_SITES_FILE_ONLY_"


@dataclass(frozen=True, slots=True)
class SiteSpec:
    """One configured site."""

    name: str
    kind: str
    site_file: Path | None = None
    slurm: SlurmSettings | None = None


def load_site_specs(settings: Settings) -> list[SiteSpec]:
    """The configured sites, from the sites file or the one-site settings."""
    if settings.sites_file is None:
        if settings.dispatcher == "slurm":
            return [SiteSpec("slurm", "slurm", settings.site_file, SlurmSettings())]
        return [SiteSpec("", "local", settings.site_file)]
    path = settings.sites_file
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValidationError("sites_file", f"cannot read {path}: {exc}") from exc
    return parse_site_specs(data, path.parent)


def parse_site_specs(data: Any, base: Path) -> list[SiteSpec]:
    """Sites from the parsed YAML; relative site files are relative to the sites file."""
    if not isinstance(data, dict) or not isinstance(data.get("sites"), list) or not data["sites"]:
        raise ValidationError("sites_file", "expected a mapping with a non-empty list 'sites'")
    specs: list[SiteSpec] = []
    for i, raw in enumerate(data["sites"]):
        where = f"sites[{i}]"
        if not isinstance(raw, dict) or not raw.get("name"):
            raise ValidationError(where, "each site needs a 'name'")
        kind = str(raw.get("kind", "local"))
        if kind not in _KINDS:
            raise ValidationError(f"{where}.kind", f"use one of {', '.join(_KINDS)}, not {kind!r}")
        site_file = raw.get("site_file")
        path = (base / str(site_file)) if site_file else None
        slurm = None
        if kind == "slurm":
            options = raw.get("slurm") or {}
            if not isinstance(options, dict):
                raise ValidationError(f"{where}.slurm", "expected a mapping of settings")
            try:
                slurm = SlurmSettings(_env_prefix=_NO_ENV, **options)  # type: ignore[call-arg]
            except ValueError as exc:
                raise ValidationError(f"{where}.slurm", str(exc)) from exc
        specs.append(SiteSpec(str(raw["name"]), kind, path, slurm))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValidationError("sites_file", f"site names must be unique: {names}")
    return specs


def slurm_site(
    spec: SiteSpec, sessions: sessionmaker[Session], clock: Clock | None = None
) -> SiteRuntime:
    """A Slurm site wired to the database: nodes from sinfo (or the file, or last time)."""
    assert spec.slurm is not None
    settings = spec.slurm
    nodes = _slurm_nodes(spec, sessions)
    loaded = LoadedSite(
        Site(spec.name, nodes), {n.name: list(range(n.gpu_count)) for n in nodes}, frozenset()
    )
    if not settings.gpu_types:
        settings = settings.model_copy(update={"gpu_types": tuple(sorted(loaded.site.gpu_types))})
    dispatcher = make_slurm_dispatcher(sessions, settings, clock)
    return SiteRuntime(spec.name, "slurm", loaded, dispatcher, SiteHealth(), settings)


def _slurm_nodes(spec: SiteSpec, sessions: sessionmaker[Session]) -> tuple[Node, ...]:
    assert spec.slurm is not None
    if spec.site_file is not None:
        return load_site(spec.site_file).site.nodes
    from gpucenter.dispatch.slurm.dispatcher import read_site

    try:
        nodes = read_site(spec.slurm.cli(), spec.slurm.partition)
    except DispatchError as exc:
        with sessions() as s:
            row = repo.site_by_name(s, spec.name)
            known = repo.nodes_of(s, row.id) if row is not None else []
            nodes = tuple(
                Node(n.name, n.gpu_type, n.gpu_count, n.block) for n in known if n.gpu_count > 0
            )
        if not nodes:
            raise ValidationError(
                f"site {spec.name}", f"Slurm does not answer and no nodes are known: {exc}"
            ) from exc
        log.warning("site %s: Slurm does not answer (%s); using its known nodes", spec.name, exc)
    if not nodes:
        raise ValidationError(f"site {spec.name}", "sinfo lists no node with GPUs (gres gpu)")
    return tuple(Node(n.name, n.gpu_type, n.gpu_count, n.block or spec.name) for n in nodes)


def build_sites(
    settings: Settings, sessions: sessionmaker[Session], clock: Clock
) -> list[SiteRuntime]:
    """Every configured site with its dispatcher."""
    from gpucenter.dispatch.gpuutil import UtilisationSampler, nvml_reader
    from gpucenter.dispatch.local.dispatcher import LocalDispatcher

    specs = load_site_specs(settings)
    runtimes: list[SiteRuntime] = []
    for spec in specs:
        if spec.kind == "slurm":
            runtimes.append(slurm_site(spec, sessions, clock))
            continue
        loaded = load_site(spec.site_file)
        if spec.name and spec.name != loaded.site.name:
            loaded = LoadedSite(
                Site(spec.name, loaded.site.nodes), loaded.gpu_index_map, loaded.virtual_nodes
            )
        log_dir = settings.log_dir if len(specs) == 1 else settings.log_dir / loaded.site.name
        log_dir.mkdir(parents=True, exist_ok=True)
        measured = frozenset(n.name for n in loaded.site.nodes) - loaded.virtual_nodes
        reader = nvml_reader() if measured else None  # real GPUs: measure their utilisation
        dispatcher = LocalDispatcher(
            log_dir.resolve(),
            clock=clock,
            kill_grace_s=settings.kill_grace_s,
            gpu_index_map=loaded.gpu_index_map,
            sampler=UtilisationSampler(reader) if reader is not None else None,
            measured_nodes=measured,
        )
        runtimes.append(SiteRuntime(loaded.site.name, "local", loaded, dispatcher))
    return runtimes


def combine(runtimes: list[SiteRuntime]) -> tuple[LoadedSite, SiteBroker]:
    """All sites' nodes as one site (named after the first) and a broker over them."""
    node_site: dict[str, str] = {}
    for rt in runtimes:
        for node in rt.loaded.site.nodes:
            if node.name in node_site:
                raise ValidationError(
                    "sites_file",
                    f"node {node.name!r} is in both {node_site[node.name]!r} and {rt.name!r}: "
                    "node names must be unique over all sites",
                )
            node_site[node.name] = rt.name
    index_map: dict[str, list[int]] = {}
    virtual: set[str] = set()
    for rt in runtimes:
        index_map.update(rt.loaded.gpu_index_map)
        virtual |= rt.loaded.virtual_nodes
    nodes = tuple(n for rt in runtimes for n in rt.loaded.site.nodes)
    site = LoadedSite(Site(runtimes[0].name, nodes), index_map, frozenset(virtual))
    broker = SiteBroker({rt.name: rt.dispatcher for rt in runtimes}, node_site)
    return site, broker


def policies_from(settings: Settings) -> Policies:
    """The core's policies as the centre configured them (everything else at its default)."""
    strategy = CLASSIC if settings.fair_share_policy == "classic" else FAIR_TREE
    entitlements = MappingProxyType(
        {p: MappingProxyType(dict(t)) for p, t in settings.programme_entitlements.items()}
    )
    return replace(DEFAULT_POLICIES, fair_share=strategy, entitlements=entitlements)


def build_context(settings: Settings, dispatcher: Dispatcher | None = None) -> AppContext:
    """Wire the configured database and sites (see `build_sites`), or the given dispatcher
    for the one site of `site_file`."""
    engine = make_engine(settings.effective_database_url)
    sessions = session_factory(engine, {"audit_files": AuditFiles.under(settings.var_dir)})
    clock = SystemClock()
    policies = policies_from(settings)
    if dispatcher is not None:
        site = load_site(settings.site_file)
        return AppContext(settings, engine, sessions, site, dispatcher, clock, policies)
    runtimes = build_sites(settings, sessions, clock)
    if len(runtimes) == 1:
        (one,) = runtimes
        return AppContext(
            settings,
            engine,
            sessions,
            one.loaded,
            one.dispatcher,
            clock,
            policies,
            site_health=one.health,
            sites=runtimes,
        )
    site, broker = combine(runtimes)
    return AppContext(
        settings,
        engine,
        sessions,
        site,
        broker,
        clock,
        policies,
        site_health=runtimes[0].health,
        sites=runtimes,
    )


def ensure_site(ctx: AppContext) -> int:
    """Create or update every site's rows from its description; return the first site's id."""
    with ctx.sessions.begin() as s:
        return register_sites(s, ctx.site_runtimes())
