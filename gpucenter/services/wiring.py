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
        - name: cloud
          kind: kubernetes
          kubernetes:              # the GPUCENTER_KUBERNETES_* settings, lower case
            kubeconfig: /etc/gpucenter/cloud.kubeconfig
            log_dir: /shared/gpucenter/cloud
        - name: lab
          kind: local
          site_file: lab.yaml      # its nodes (local sites; optional for Slurm sites)

  The settings of a site in the file are only those written there (the environment's
  GPUCENTER_SLURM_* are not mixed in: two sites must never share one by accident).

Each kind is built by its entry in `SITE_KINDS` (its settings type and a factory); adding a
kind is its package under `gpucenter.dispatch` (a `Dispatcher` declaring its capabilities)
plus one entry there. A Slurm site's nodes are read from ``sinfo`` when the server starts, a
Kubernetes site's from its API server (nodes with GPUs and a GPU type label); if the cluster
does not answer then, the nodes registered in the database last time are used (the server
starts, and the site's jobs wait until it answers). Node names must be unique
over all sites: the core's placement names nodes, and the broker routes a job by them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from pydantic_settings import BaseSettings
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.config import Settings
from gpucenter.core import DEFAULT_POLICIES, Policies
from gpucenter.core.fairshare import FAIR_TREE
from gpucenter.core.fairshare_classic import CLASSIC
from gpucenter.core.policy import CENTRE_WEIGHTS
from gpucenter.dispatch.base import Dispatcher, DispatchError, SiteKind
from gpucenter.dispatch.broker import SiteBroker
from gpucenter.dispatch.isolation import IsolationSetting
from gpucenter.dispatch.local.dispatcher import LocalDispatcher
from gpucenter.dispatch.slurm.dispatcher import (
    LIMIT_CHECK_S,
    SlurmDispatcher,
    limit_settings,
    read_site,
)
from gpucenter.domain.clock import Clock, SystemClock
from gpucenter.domain.cluster import Node, Site
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.db import make_engine, session_factory
from gpucenter.persistence.sealed_env import EnvKeys
from gpucenter.services.context import AppContext
from gpucenter.services.fencing import Fence
from gpucenter.services.identity.audit_keys import AuditFiles
from gpucenter.services.identity.provisioning import AccountSync
from gpucenter.services.kubernetes.settings import KubernetesSettings
from gpucenter.services.sites.config import LoadedSite, load_site
from gpucenter.services.sites.isolation import (
    account_policy,
    effective_setting,
    local_isolation,
    secure_state,
)
from gpucenter.services.sites.registry import register_sites
from gpucenter.services.sites.runtime import SiteRuntime
from gpucenter.services.sites.slurm_settings import SlurmSettings
from gpucenter.services.slurm.usage import DatabaseObserver

__all__ = [
    "SITE_KINDS",
    "SiteKindSupport",
    "SiteSpec",
    "SiteWiring",
    "build_context",
    "build_sites",
    "combine",
    "ensure_site",
    "load_site_specs",
    "make_slurm_dispatcher",
    "parse_site_specs",
]

log = logging.getLogger(__name__)
# A prefix no environment sets: site settings from a file take nothing from the environment.
_NO_ENV = "GPUCENTER_SITES_FILE_ONLY_"


@dataclass(frozen=True, slots=True)
class SiteSpec:
    """One configured site. An empty name: the name its site file gives it."""

    name: str
    kind: SiteKind
    site_file: Path | None = None
    settings: BaseSettings | None = None
    """The kind's own settings (`SiteKindSupport.settings`); None for kinds without any."""

    @property
    def slurm(self) -> SlurmSettings | None:
        """A Slurm site's settings (what the ``gpucenter slurm`` commands work with)."""
        return self.settings if isinstance(self.settings, SlurmSettings) else None


@dataclass(frozen=True, slots=True)
class SiteWiring:
    """What every site factory is given besides its spec."""

    settings: Settings
    sessions: sessionmaker[Session]
    clock: Clock
    several: bool
    """More than one site: each keeps its job logs in a folder of its own."""
    fence: Fence | None = None
    """The scheduler's fence, for site code that writes to the database (Slurm's observer)."""

    def clock_now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), tz=UTC)


SiteFactory = Callable[[SiteSpec, SiteWiring], SiteRuntime]


@dataclass(frozen=True, slots=True)
class SiteKindSupport:
    """What the wiring knows of one site kind: the type of its own settings (read from the
    sites file's mapping named after the kind, or for the one site from the environment) and
    how to build a site of it. A new kind is its dispatch package plus one entry here."""

    settings: type[BaseSettings] | None
    build: SiteFactory
    one_site_name: str = ""
    """The site's name when it is the one site (no sites file); empty: its site file's."""


def load_site_specs(settings: Settings) -> list[SiteSpec]:
    """The configured sites, from the sites file or the one-site settings."""
    if settings.sites_file is None:
        kind = SiteKind(settings.dispatcher)
        support = SITE_KINDS[kind]
        own = support.settings() if support.settings is not None else None
        return [SiteSpec(support.one_site_name, kind, settings.site_file, own)]
    path = settings.sites_file
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValidationError.about(
            "sites_file", msg("error.cannot_read_file", path=str(path), problem=str(exc))
        ) from exc
    return parse_site_specs(data, path.parent)


def parse_site_specs(data: Any, base: Path) -> list[SiteSpec]:
    """Sites from the parsed YAML; relative site files are relative to the sites file."""
    if not isinstance(data, dict) or not isinstance(data.get("sites"), list) or not data["sites"]:
        raise ValidationError.about("sites_file", msg("error.sites_file_shape"))
    specs: list[SiteSpec] = []
    for i, raw in enumerate(data["sites"]):
        where = f"sites[{i}]"
        if not isinstance(raw, dict) or not raw.get("name"):
            raise ValidationError.about(where, msg("error.site_needs_name"))
        kind = str(raw.get("kind", SiteKind.LOCAL.value))
        if kind not in SITE_KINDS:
            kinds = ", ".join(k.value for k in SITE_KINDS)
            raise ValidationError.about(
                f"{where}.kind", msg("error.site_kind", kinds=kinds, kind=repr(kind))
            )
        site_file = raw.get("site_file")
        path = (base / str(site_file)) if site_file else None
        own = SITE_KINDS[SiteKind(kind)].settings
        options = None
        if own is not None:
            given = raw.get(kind) or {}
            if not isinstance(given, dict):
                raise ValidationError.about(f"{where}.{kind}", msg("error.site_settings_mapping"))
            try:
                options = own(_env_prefix=_NO_ENV, **given)
            except ValueError as exc:
                raise ValidationError.about(
                    f"{where}.{kind}", msg("error.site_settings", problem=str(exc))
                ) from exc
        specs.append(SiteSpec(str(raw["name"]), SiteKind(kind), path, options))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValidationError.about("sites_file", msg("error.site_names_unique", names=str(names)))
    return specs


# ------------------------------------------------------------------------ site kinds
def _local_site(spec: SiteSpec, wiring: SiteWiring) -> SiteRuntime:
    """Jobs as processes on this machine, on the nodes of the site file."""
    from gpucenter.dispatch.gpuutil import UtilisationSampler, nvml_reader

    loaded = load_site(spec.site_file)
    if spec.name and spec.name != loaded.site.name:
        loaded = LoadedSite(
            Site(spec.name, loaded.site.nodes), loaded.gpu_index_map, loaded.virtual_nodes
        )
    settings = wiring.settings
    log_dir = settings.log_dir / loaded.site.name if wiring.several else settings.log_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    jobs_root = settings.tenant_root / "jobs"
    if wiring.several:
        jobs_root = jobs_root / loaded.site.name
    measured = frozenset(n.name for n in loaded.site.nodes) - loaded.virtual_nodes
    reader = nvml_reader() if measured else None  # real GPUs: measure their utilisation
    dispatcher = LocalDispatcher(
        log_dir.resolve(),
        clock=wiring.clock,
        kill_grace_s=settings.kill_grace_s,
        gpu_index_map=loaded.gpu_index_map,
        sampler=UtilisationSampler(reader) if reader is not None else None,
        measured_nodes=measured,
        isolation=local_isolation(
            settings, wiring.sessions, jobs_root=jobs_root.resolve(), device_nodes=measured
        ),
    )
    return SiteRuntime(loaded.site.name, loaded, dispatcher)


def _slurm_site(spec: SiteSpec, wiring: SiteWiring) -> SiteRuntime:
    """A Slurm cluster: nodes from sinfo (or the site file, or those known last time)."""
    settings = spec.slurm
    assert settings is not None, "a Slurm site always has its settings (SITE_KINDS)"
    nodes = _slurm_nodes(spec.name, spec.site_file, settings, wiring.sessions)
    loaded = LoadedSite(
        Site(spec.name, nodes), {n.name: list(range(n.gpu_count)) for n in nodes}, frozenset()
    )
    if not settings.gpu_types:
        settings = settings.model_copy(update={"gpu_types": tuple(sorted(loaded.site.gpu_types))})
    if settings.marker_key_file is None:  # beside the audit key ring, never in the database
        key_file = Path(wiring.settings.var_dir) / "secrets" / "slurm-marker.key"
        settings = settings.model_copy(update={"marker_key_file": key_file})
    dispatcher = make_slurm_dispatcher(wiring.sessions, settings, wiring.clock, wiring.fence)
    return SiteRuntime(spec.name, loaded, dispatcher, settings=settings)


def slurm_grace_s(settings: SlurmSettings) -> int:
    """How long past its rounded limit the site may run a job: OverTimeLimit, the 30 s of
    slurmctld's limit check, and KillWait, from the settings or else from the site's own
    configuration (Slurm's defaults, 0 and 30, when it does not answer)."""
    over, kill = settings.over_time_limit_min, settings.kill_wait_s
    if over is None or kill is None:
        try:
            read_over, read_kill = limit_settings(settings.cli())
        except DispatchError as exc:
            log.warning("cannot read the site's time limit settings (%s): Slurm defaults", exc)
            read_over, read_kill = 0, 30
        if read_over is None and over is None:
            log.warning(
                "the site's OverTimeLimit is UNLIMITED: runs are charged at most their limit "
                "and an hour of overtime; set OverTimeLimit (0) for gpucenter's partition"
            )
            read_over = 60
        over = read_over if over is None else over
        kill = (read_kill if read_kill is not None else 30) if kill is None else kill
    return 60 * (over or 0) + LIMIT_CHECK_S + (kill or 0)


def make_slurm_dispatcher(
    sessions: sessionmaker[Session],
    settings: SlurmSettings,
    clock: Clock | None = None,
    fence: Fence | None = None,
) -> SlurmDispatcher:
    """A SlurmDispatcher whose observations (Slurm's start times, why a job waits there,
    whether a held job's start was recorded) go to and come from the jobs' rows, fenced
    like every scheduler write. Everything it submits comes in the requests."""
    return SlurmDispatcher(
        settings.log_dir.resolve(),
        cli=settings.cli(),
        partition=settings.partition,
        clock=clock,
        observer=DatabaseObserver(sessions, fence),
        run_as_owner=settings.run_as_owner,
        top_account=settings.top_account,
        grace_s=slurm_grace_s(settings),
        hold_until_recorded=True,
        marker_key=settings.marker_key(),
        sessions_over_tcp=settings.sessions_over_tcp,
    )


def _slurm_nodes(
    name: str, site_file: Path | None, settings: SlurmSettings, sessions: sessionmaker[Session]
) -> tuple[Node, ...]:
    if site_file is not None:
        return load_site(site_file).site.nodes
    try:
        nodes = read_site(settings.cli(), settings.partition)
    except DispatchError as exc:
        with sessions() as s:
            row = repo.site_by_name(s, name)
            known = repo.nodes_of(s, row.id) if row is not None else []
            nodes = tuple(
                Node(n.name, n.gpu_type, n.gpu_count, n.block) for n in known if n.gpu_count > 0
            )
        if not nodes:
            raise ValidationError.about(
                f"site {name}", msg("error.slurm_no_answer", problem=str(exc))
            ) from exc
        log.warning("site %s: Slurm does not answer (%s); using its known nodes", name, exc)
    if not nodes:
        raise ValidationError.about(f"site {name}", msg("error.sinfo_no_gpus"))
    return tuple(Node(n.name, n.gpu_type, n.gpu_count, n.block or name) for n in nodes)


def _kubernetes_site(spec: SiteSpec, wiring: SiteWiring) -> SiteRuntime:
    """A Kubernetes cluster: nodes from the API (or the site file, or those known last
    time), jobs as Jobs in a namespace per project, which a project's first job provisions
    (the namespace sync for that project) where the site applies its sync."""
    from gpucenter.dispatch.kubernetes.dispatcher import KubernetesDispatcher, read_nodes
    from gpucenter.services.kubernetes.sync import sync_site

    settings = spec.settings
    assert isinstance(settings, KubernetesSettings), "SITE_KINDS gives it its settings"
    api = settings.api()
    if spec.site_file is not None:
        nodes = load_site(spec.site_file).site.nodes
    else:
        try:
            nodes = read_nodes(
                api,
                settings.gpu_resource,
                settings.gpu_type_label,
                settings.block_label,
                settings.node_selector,
            )
        except DispatchError as exc:
            nodes = _registered_nodes(wiring.sessions, spec.name)
            if not nodes:
                raise ValidationError.about(
                    f"site {spec.name}", msg("error.k8s_no_answer", problem=str(exc))
                ) from exc
            log.warning("site %s: the API server does not answer (%s); known nodes", spec.name, exc)
        if settings.gpu_types:
            nodes = tuple(n for n in nodes if n.gpu_type in settings.gpu_types)
    if not nodes:
        raise ValidationError.about(f"site {spec.name}", msg("error.cluster_no_gpus"))
    nodes = tuple(Node(n.name, n.gpu_type, n.gpu_count, n.block or spec.name) for n in nodes)
    loaded = LoadedSite(
        Site(spec.name, nodes), {n.name: list(range(n.gpu_count)) for n in nodes}, frozenset()
    )
    if not settings.gpu_types:
        settings = settings.model_copy(update={"gpu_types": tuple(sorted(loaded.site.gpu_types))})
    site_settings = settings

    def provision(project: str) -> None:
        sync_site(wiring.sessions, site_settings, wiring.clock_now(), True, [project], api)

    log_dir = settings.log_dir.resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    dispatcher = KubernetesDispatcher(
        api,
        log_dir,
        shape=settings.shape(),
        namespace_prefix=settings.namespace_prefix,
        clock=wiring.clock,
        observer=DatabaseObserver(wiring.sessions),
        provision=provision if settings.apply_sync else None,
        fetch_logs=settings.fetch_logs,
    )
    return SiteRuntime(spec.name, loaded, dispatcher, settings=settings)


def _registered_nodes(sessions: sessionmaker[Session], site: str) -> tuple[Node, ...]:
    """The nodes with GPUs the database knows for a site (from its last start)."""
    with sessions() as s:
        row = repo.site_by_name(s, site)
        known = repo.nodes_of(s, row.id) if row is not None else []
        return tuple(
            Node(n.name, n.gpu_type, n.gpu_count, n.block) for n in known if n.gpu_count > 0
        )


SITE_KINDS: Mapping[SiteKind, SiteKindSupport] = {
    SiteKind.LOCAL: SiteKindSupport(None, _local_site),
    SiteKind.SLURM: SiteKindSupport(SlurmSettings, _slurm_site, one_site_name="slurm"),
    SiteKind.KUBERNETES: SiteKindSupport(
        KubernetesSettings, _kubernetes_site, one_site_name="kubernetes"
    ),
}
"""The site kinds a server can drive, by the kind named in the settings or sites file."""


def build_sites(
    settings: Settings, sessions: sessionmaker[Session], clock: Clock, fence: Fence | None = None
) -> list[SiteRuntime]:
    """Every configured site with its dispatcher, each built by its kind's factory."""
    specs = load_site_specs(settings)
    wiring = SiteWiring(settings, sessions, clock, several=len(specs) > 1, fence=fence)
    return [SITE_KINDS[spec.kind].build(spec, wiring) for spec in specs]


def combine(runtimes: list[SiteRuntime]) -> tuple[LoadedSite, SiteBroker]:
    """All sites' nodes as one site (named after the first) and a broker over them."""
    node_site: dict[str, str] = {}
    for rt in runtimes:
        for node in rt.loaded.site.nodes:
            if node.name in node_site:
                raise ValidationError.about(
                    "sites_file",
                    msg(
                        "error.node_in_two_sites",
                        node=repr(node.name),
                        first=repr(node_site[node.name]),
                        second=repr(rt.name),
                    ),
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
    """The core's policies as the centre configured them: the centre's weights (the ones the
    simulator's default policy replays, so that what the planner says is what the centre
    does), the fair-share strategy and programme entitlements."""
    strategy = CLASSIC if settings.fair_share_policy == "classic" else FAIR_TREE
    entitlements = MappingProxyType(
        {p: MappingProxyType(dict(t)) for p, t in settings.programme_entitlements.items()}
    )
    return replace(
        DEFAULT_POLICIES, weights=CENTRE_WEIGHTS, fair_share=strategy, entitlements=entitlements
    )


def build_context(settings: Settings, dispatcher: Dispatcher | None = None) -> AppContext:
    """Wire the configured database and sites (see `build_sites`), or the given dispatcher
    for the one site of `site_file`. The state directory is made private first."""
    secure_state(settings)
    engine = make_engine(settings.effective_database_url)
    sessions = session_factory(
        engine,
        {
            "audit_files": AuditFiles.under(settings.var_dir),
            "env_keys": EnvKeys.under(settings.var_dir),
        },
    )
    clock = SystemClock()
    policies = policies_from(settings)
    if dispatcher is not None:
        site = load_site(settings.site_file)
        return AppContext(settings, engine, sessions, site, dispatcher, clock, policies)
    fence = Fence()
    runtimes = build_sites(settings, sessions, clock, fence)
    if len(runtimes) == 1:
        (one,) = runtimes
        ctx = AppContext(
            settings,
            engine,
            sessions,
            one.loaded,
            one.dispatcher,
            clock,
            policies,
            site_health=one.health,
            sites=runtimes,
            fence=fence,
        )
    else:
        site, broker = combine(runtimes)
        ctx = AppContext(
            settings,
            engine,
            sessions,
            site,
            broker,
            clock,
            policies,
            site_health=runtimes[0].health,
            sites=runtimes,
            fence=fence,
        )
    ctx.account_sync = account_sync_for(settings, sessions, runtimes)
    return ctx


def account_sync_for(
    settings: Settings, sessions: sessionmaker[Session], runtimes: list[SiteRuntime]
) -> AccountSync | None:
    """Provisioning of Unix accounts, where a local site runs jobs as their owners: the
    setting resolves to multi-tenant and the server is root (it alone can make accounts)."""
    local = any(isinstance(rt.dispatcher, LocalDispatcher) for rt in runtimes)
    multi = effective_setting(settings) is IsolationSetting.MULTI_TENANT
    if not (local and multi and os.geteuid() == 0):
        return None
    return AccountSync(sessions, account_policy(settings))


def ensure_site(ctx: AppContext) -> int:
    """Create or update every site's rows from its description; return the first site's id."""
    with ctx.sessions.begin() as s:
        return register_sites(s, ctx.site_runtimes())
