"""Keeping a Kubernetes site's namespaces in step with gpucenter: the desired state.

The sync is a reconciliation (`gpucenter.dispatch.kubernetes.tenancy` reads the cluster,
plans and applies); this module builds what the site *should* look like from gpucenter's
database, and `sync_site` runs the whole round. It is a dry run unless asked to apply: the
plan lists every change with its reason. The scheduler leader runs `scheduled_sync` every
``kubernetes_sync_interval_s``, which applies when the site's ``apply_sync`` says so (the
default) and otherwise only logs the plan.

Per project with a current allocation at the site (of one of its GPU types, or a general one):

- **GPUs at once**, per GPU type: the sum of its allocations' ``max_concurrent_gpus`` where
  every allocation covering that type has one, else all the site's GPUs of the type (the
  allocation limits GPU-hours, which gpucenter's own admission enforces, not concurrency).
  Types it has no allocation for: 0. The ResourceQuota is the sum; Kueue's ClusterQueue has
  one quota per type.
- **Held** when every current allocation is exhausted and a programme of them holds such
  projects (the default): quota 0 and the ClusterQueue on Hold, so the namespace admits no
  new pods, gpucenter's or anyone's. A top-up or a new allocation makes it active again, and
  the next sync releases it. Projects exhausted under an *opportunistic* programme are not
  held: gpucenter runs their jobs preemptibly on idle GPUs.
- **Members**: the project's members, as ``user_prefix`` + user name, read their namespace.

Projects without a current allocation have no namespace made for them (an existing one is
kept, with the quota of its project's allocations: none, so 0).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.accounting import Enforcement
from gpucenter.dispatch.kubernetes.api import KubeApi
from gpucenter.dispatch.kubernetes.dispatcher import read_nodes
from gpucenter.dispatch.kubernetes.manifests import namespace_for
from gpucenter.dispatch.kubernetes.tenancy import (
    Change,
    ProjectTenancy,
    TenancyState,
    apply,
    plan,
    read_actual,
)
from gpucenter.domain.allocations import AllocationState
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import AllocationRow, MembershipRow, ProjectRow, UserRow
from gpucenter.services.allocations import ProjectStanding, project_standings
from gpucenter.services.kubernetes.settings import KubernetesSettings

__all__ = ["Change", "desired_state", "scheduled_sync", "site_gpus", "sync_site"]

log = logging.getLogger(__name__)


def _held(s: Session, standing: ProjectStanding) -> bool:
    """Every current allocation exhausted, under a programme that holds such projects."""
    from gpucenter.services.accounting.budgets import enforcement_for

    if not standing.states or any(st != AllocationState.EXHAUSTED for st, _ in standing.states):
        return False
    actions = {enforcement_for(s, programme_id) for _, programme_id in standing.states}
    return actions != {Enforcement.OPPORTUNISTIC}


def _caps(
    s: Session, now: datetime, types: Sequence[str], totals: Mapping[str, int]
) -> dict[int, dict[str, int]]:
    """Project id -> GPU type -> GPUs it may hold at once (see the module's rule)."""
    capped: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    open_types: dict[int, set[str]] = defaultdict(set)
    rows = s.scalars(select(AllocationRow).where(repo.current_allocation(now)))
    for alloc in rows:
        covers = [alloc.gpu_type] if alloc.gpu_type is not None else list(types)
        for gpu_type in covers:
            if gpu_type not in totals:
                continue
            if alloc.max_concurrent_gpus is None:
                open_types[alloc.project_id].add(gpu_type)
            else:
                capped[alloc.project_id][gpu_type] += alloc.max_concurrent_gpus
    caps: dict[int, dict[str, int]] = {}
    for project_id in set(capped) | set(open_types):
        per_type = {t: min(n, totals[t]) for t, n in capped[project_id].items()}
        per_type.update({t: totals[t] for t in open_types[project_id]})
        caps[project_id] = per_type
    return caps


def desired_state(
    s: Session, settings: KubernetesSettings, now: datetime, totals: Mapping[str, int]
) -> TenancyState:
    """What the site should hold for gpucenter's projects; `totals`: the site's GPUs per
    GPU type (`site_gpus`)."""
    types = sorted(totals)
    standings = project_standings(s, now, types)
    caps = _caps(s, now, types, totals)
    members: dict[int, list[str]] = defaultdict(list)
    rows = s.execute(
        select(MembershipRow.project_id, UserRow.username)
        .join(UserRow, UserRow.id == MembershipRow.user_id)
        .order_by(UserRow.username)
    )
    for project_id, username in rows:
        members[project_id].append(settings.user_prefix + username)
    state = TenancyState(gpu_types=set(types))
    for project in s.scalars(select(ProjectRow).order_by(ProjectRow.name)):
        standing = standings.get(project.id)
        if standing is None:
            continue  # no current allocation here: nothing to run, no namespace made
        namespace = namespace_for(project.name, settings.namespace_prefix)
        state.projects[namespace] = ProjectTenancy(
            project=project.name,
            namespace=namespace,
            gpus=caps.get(project.id, {}),
            held=_held(s, standing),
            members=tuple(members[project.id]),
        )
    return state


def site_gpus(api: KubeApi, settings: KubernetesSettings) -> dict[str, int]:
    """The site's GPUs per GPU type, from its nodes now (only `gpu_types` where given)."""
    totals: dict[str, int] = defaultdict(int)
    for node in read_nodes(
        api,
        settings.gpu_resource,
        settings.gpu_type_label,
        settings.block_label,
        settings.node_selector,
    ):
        if not settings.gpu_types or node.gpu_type in settings.gpu_types:
            totals[node.gpu_type] += node.gpu_count
    return dict(totals)


def sync_site(
    sessions: sessionmaker[Session],
    settings: KubernetesSettings,
    now: datetime,
    apply_changes: bool = False,
    projects: Sequence[str] | None = None,
    api: KubeApi | None = None,
) -> list[Change]:
    """Plan one site's namespaces (a dry run) and, with `apply_changes`, make them.
    `projects`: only these projects' namespaces (a job's first submit provisions its own)."""
    api = api or settings.api()
    options = settings.tenancy()
    totals = site_gpus(api, settings)
    with sessions() as s:
        desired = desired_state(s, settings, now, totals)
    only = None
    if projects is not None:
        only = [namespace_for(p, settings.namespace_prefix) for p in projects]
    changes = plan(desired, read_actual(api, options), options, only)
    if apply_changes:
        apply(api, changes)
    return changes


def scheduled_sync(
    sessions: sessionmaker[Session], settings: KubernetesSettings, now: datetime
) -> list[Change]:
    """What the scheduler leader runs every few minutes: applies where the site says so,
    else logs what it would change."""
    changes = sync_site(sessions, settings, now, apply_changes=settings.apply_sync)
    if changes and not settings.apply_sync:
        for change in changes:
            log.info("namespace sync (dry run, apply_sync is off) would %s", change)
    return changes
