"""The cluster's side of the namespace sync: a project's namespace, read, planned and applied.

A reconciliation, as the Slurm accounts sync is: the control plane builds the *desired*
`TenancyState` from its database (`gpucenter.services.kubernetes.sync`), `read_actual` reads
what the cluster has (only objects labelled with this gpucenter's instance), `plan` lists the
exact changes (a dry run shows them), `apply` makes them. Applying twice changes nothing the
second time, and a hand edit of a managed object (drift) is planned back.

Per project, in its namespace (``gpc-<project>``):

- the **Namespace**, labelled ``gpucenter.io/instance`` and ``gpucenter.io/project``;
- a **ResourceQuota** ``gpucenter-gpus`` on ``requests.nvidia.com/gpu``: the GPUs the project
  may hold at once at this site (all types). 0 when the project is *held* (its allocations
  are used up and its programme holds such projects): the API server then refuses every new
  pod asking for a GPU in the namespace, gpucenter's or anyone's; running pods go on;
- with **Kueue**: a ClusterQueue named after the namespace with a quota per GPU type
  (a ResourceFlavor per type selects the nodes by the GPU type label), ``stopPolicy: Hold``
  when held (nothing new is admitted, admitted work runs to its end), and the LocalQueue
  ``gpucenter`` in the namespace that gpucenter's Jobs name;
- with **RBAC**: a Role ``gpucenter-member`` (read pods, their logs, events, Jobs and Kueue
  workloads) bound to the project's members, so that they can watch their jobs with kubectl;
  they submit through gpucenter, which is what keeps the ledger and fair share whole.

Namespaces of projects gpucenter no longer has are held (quota 0, no members), never deleted:
deleting a namespace deletes everything in it, which is an operator's decision.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpucenter.dispatch.kubernetes.api import (
    CLUSTER_QUEUES,
    CORE,
    FLAVORS,
    LOCAL_QUEUES,
    NAMESPACES,
    QUOTAS,
    ROLE_BINDINGS,
    ROLES,
    Conflict,
    Kind,
    KubeApi,
    NotFound,
)
from gpucenter.dispatch.kubernetes.manifests import (
    ANNOTATION_PROJECT,
    LABEL_INSTANCE,
    LABEL_PROJECT,
    slug,
)

__all__ = [
    "QUOTA_NAME",
    "ROLE_NAME",
    "Change",
    "ProjectTenancy",
    "TenancyOptions",
    "TenancyState",
    "apply",
    "flavor_name",
    "plan",
    "read_actual",
]

_log = logging.getLogger(__name__)
Json = dict[str, Any]
QUOTA_NAME = "gpucenter-gpus"
ROLE_NAME = "gpucenter-member"
SERVICE_ACCOUNTS = Kind(CORE, "serviceaccounts")
_RBAC_GROUP = "rbac.authorization.k8s.io"
_MEMBER_RULES = [
    {
        "apiGroups": [""],
        "resources": ["pods", "pods/log", "events"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["kueue.x-k8s.io"],
        "resources": ["workloads", "localqueues"],
        "verbs": ["get", "list", "watch"],
    },
]


@dataclass(frozen=True, slots=True)
class ProjectTenancy:
    """What one project's namespace should hold."""

    project: str
    namespace: str
    gpus: Mapping[str, int] = field(default_factory=dict)
    """GPU type -> GPUs the project may hold at once (missing types: 0)."""
    held: bool = False
    members: tuple[str, ...] = ()
    """RBAC subjects: the members' names as the cluster knows its users."""

    @property
    def total(self) -> int:
        return 0 if self.held else sum(self.gpus.values())


@dataclass(slots=True)
class TenancyState:
    """Projects' namespaces by namespace name, and the GPU types that have a flavor."""

    projects: dict[str, ProjectTenancy] = field(default_factory=dict)
    gpu_types: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class TenancyOptions:
    """The site's choices (from its settings)."""

    instance: str = "gpucenter"
    queue: str | None = "gpucenter"
    """The LocalQueue in each namespace; None: no Kueue objects at all."""
    gpu_resource: str = "nvidia.com/gpu"
    gpu_type_label: str = "gpucenter.io/gpu-type"
    rbac: bool = True

    @property
    def selector(self) -> str:
        return f"{LABEL_INSTANCE}={self.instance}"


@dataclass(frozen=True, slots=True)
class Change:
    """One create or update of one object, and why."""

    action: str  # "create" | "update"
    kind: Kind
    namespace: str | None
    name: str
    body: Json
    why: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.action} {self.kind.plural} {where}: {self.why}"


def flavor_name(instance: str, gpu_type: str) -> str:
    """The ResourceFlavor of a GPU type: one per gpucenter instance (two instances sharing a
    cluster never relabel each other's)."""
    return slug(f"{instance}-{gpu_type}")


# ------------------------------------------------------------------------ desired objects
def _labels(options: TenancyOptions, project: str | None = None) -> dict[str, str]:
    labels = {LABEL_INSTANCE: options.instance}
    if project is not None:
        labels[LABEL_PROJECT] = slug(project)
    return labels


def _namespace(p: ProjectTenancy, options: TenancyOptions) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": p.namespace,
            "labels": _labels(options, p.project),
            "annotations": {ANNOTATION_PROJECT: p.project},
        },
    }


def _quota(p: ProjectTenancy, options: TenancyOptions) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": QUOTA_NAME, "namespace": p.namespace, "labels": _labels(options)},
        "spec": {"hard": {f"requests.{options.gpu_resource}": str(p.total)}},
    }


def _role(p: ProjectTenancy, options: TenancyOptions) -> Json:
    return {
        "apiVersion": f"{_RBAC_GROUP}/v1",
        "kind": "Role",
        "metadata": {"name": ROLE_NAME, "namespace": p.namespace, "labels": _labels(options)},
        "rules": _MEMBER_RULES,
    }


def _binding(p: ProjectTenancy, options: TenancyOptions) -> Json:
    return {
        "apiVersion": f"{_RBAC_GROUP}/v1",
        "kind": "RoleBinding",
        "metadata": {"name": ROLE_NAME, "namespace": p.namespace, "labels": _labels(options)},
        "roleRef": {"apiGroup": _RBAC_GROUP, "kind": "Role", "name": ROLE_NAME},
        "subjects": [{"apiGroup": _RBAC_GROUP, "kind": "User", "name": m} for m in p.members],
    }


def _flavor(gpu_type: str, options: TenancyOptions) -> Json:
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ResourceFlavor",
        "metadata": {"name": flavor_name(options.instance, gpu_type), "labels": _labels(options)},
        "spec": {"nodeLabels": {options.gpu_type_label: gpu_type}},
    }


def _cluster_queue(p: ProjectTenancy, gpu_types: Iterable[str], options: TenancyOptions) -> Json:
    flavors = [
        {
            "name": flavor_name(options.instance, t),
            "resources": [{"name": options.gpu_resource, "nominalQuota": p.gpus.get(t, 0)}],
        }
        for t in sorted(gpu_types)
    ]
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ClusterQueue",
        "metadata": {"name": p.namespace, "labels": _labels(options, p.project)},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": p.namespace}},
            "queueingStrategy": "BestEffortFIFO",
            "stopPolicy": "Hold" if p.held else "None",
            "resourceGroups": [{"coveredResources": [options.gpu_resource], "flavors": flavors}],
        },
    }


def _local_queue(p: ProjectTenancy, queue: str, options: TenancyOptions) -> Json:
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "LocalQueue",
        "metadata": {"name": queue, "namespace": p.namespace, "labels": _labels(options)},
        "spec": {"clusterQueue": p.namespace},
    }


# --------------------------------------------------------------------------- comparing
def _quantity(value: object) -> int | None:
    text = str(value)
    return int(text) if text.isdigit() else None


@dataclass(frozen=True, slots=True)
class _QueueView:
    """What we manage of a ClusterQueue, normalised (quantities may come back as strings)."""

    quotas: dict[str, int | None]
    stop: str
    selector: dict[str, str]
    strategy: str


def _cq_view(obj: Json, resource: str) -> _QueueView:
    spec = obj.get("spec") or {}
    quotas: dict[str, int | None] = {}
    for group in spec.get("resourceGroups") or ():
        for flavor in group.get("flavors") or ():
            for res in flavor.get("resources") or ():
                if res.get("name") == resource:
                    quotas[flavor.get("name", "")] = _quantity(res.get("nominalQuota"))
    selector = (spec.get("namespaceSelector") or {}).get("matchLabels") or {}
    return _QueueView(
        quotas,
        spec.get("stopPolicy") or "None",
        dict(selector),
        spec.get("queueingStrategy") or "BestEffortFIFO",
    )


def _differs(kind: Kind, have: Json, want: Json, options: TenancyOptions) -> str:
    """Why `have` must be updated to `want` ('' when it need not)."""
    if kind is NAMESPACES:
        labels = (have.get("metadata") or {}).get("labels") or {}
        wanted = want["metadata"]["labels"]
        return "" if all(labels.get(k) == v for k, v in wanted.items()) else "labels"
    if kind is QUOTAS:
        key = f"requests.{options.gpu_resource}"
        had = (have.get("spec") or {}).get("hard", {}).get(key)
        new = want["spec"]["hard"][key]
        return "" if _quantity(had) == int(new) else f"{key} {had} -> {new}"
    if kind is ROLES:
        return "" if have.get("rules") == want["rules"] else "rules"
    if kind is ROLE_BINDINGS:
        had_subjects = sorted(s.get("name", "") for s in have.get("subjects") or ())
        new_subjects = sorted(s["name"] for s in want["subjects"])
        return "" if had_subjects == new_subjects else f"members {had_subjects} -> {new_subjects}"
    if kind is FLAVORS:
        had = (have.get("spec") or {}).get("nodeLabels")
        return "" if had == want["spec"]["nodeLabels"] else "node labels"
    if kind is CLUSTER_QUEUES:
        had_view = _cq_view(have, options.gpu_resource)
        new_view = _cq_view(want, options.gpu_resource)
        if had_view == new_view:
            return ""
        parts = []
        if had_view.quotas != new_view.quotas:
            parts.append(f"quota {had_view.quotas} -> {new_view.quotas}")
        if had_view.stop != new_view.stop:
            parts.append(f"stopPolicy {had_view.stop} -> {new_view.stop}")
        return ", ".join(parts) or "spec"
    if kind is LOCAL_QUEUES:
        had = (have.get("spec") or {}).get("clusterQueue")
        return "" if had == want["spec"]["clusterQueue"] else "cluster queue"
    return ""


# ---------------------------------------------------------------------------- reading
def read_actual(api: KubeApi, options: TenancyOptions) -> dict[tuple[str, str | None, str], Json]:
    """Every object this instance manages, by (plural, namespace, name); namespaces of our
    projects that lost our label are not in it (the plan labels them again)."""
    kinds = [NAMESPACES, QUOTAS]
    if options.rbac:
        kinds += [ROLES, ROLE_BINDINGS]
    if options.queue is not None:
        kinds += [FLAVORS, CLUSTER_QUEUES, LOCAL_QUEUES]
    found: dict[tuple[str, str | None, str], Json] = {}
    for kind in kinds:
        for obj in api.list(kind.path(), options.selector):
            meta = obj["metadata"]
            namespace = meta.get("namespace") if kind.namespaced else None
            found[(kind.plural, namespace, meta["name"])] = obj
    return found


# --------------------------------------------------------------------------- planning
def plan(
    desired: TenancyState,
    actual: Mapping[tuple[str, str | None, str], Json],
    options: TenancyOptions,
    only: Sequence[str] | None = None,
) -> list[Change]:
    """The creates and updates that turn `actual` into `desired`, in an order that works
    (flavors and namespaces before what lives in them). `only`: these namespaces alone (a
    job's first submit provisions its project's namespace without touching the others)."""
    projects = dict(desired.projects)
    if only is None:
        for plural, _, name in actual:
            if plural == NAMESPACES.plural and name not in projects:
                # A namespace of a project gpucenter no longer has: held, kept.
                annotations = actual[(plural, None, name)]["metadata"].get("annotations") or {}
                projects[name] = ProjectTenancy(
                    annotations.get(ANNOTATION_PROJECT, name), name, held=True
                )
    else:
        projects = {ns: p for ns, p in projects.items() if ns in set(only)}
    wanted: list[tuple[Kind, str | None, Json, str]] = []
    if options.queue is not None:
        for gpu_type in sorted(desired.gpu_types):
            wanted.append((FLAVORS, None, _flavor(gpu_type, options), f"GPU type {gpu_type}"))
    for ns in sorted(projects):
        p = projects[ns]
        state = "held: its allocations are used up" if p.held else f"{p.total} GPUs at once"
        wanted.append((NAMESPACES, None, _namespace(p, options), f"project {p.project}"))
        wanted.append((QUOTAS, ns, _quota(p, options), state))
        if options.rbac:
            wanted.append((ROLES, ns, _role(p, options), "what members may read"))
            wanted.append((ROLE_BINDINGS, ns, _binding(p, options), f"{len(p.members)} members"))
        if options.queue is not None:
            cq = _cluster_queue(p, desired.gpu_types, options)
            wanted.append((CLUSTER_QUEUES, None, cq, state))
            lq = _local_queue(p, options.queue, options)
            wanted.append((LOCAL_QUEUES, ns, lq, f"gpucenter's queue in {ns}"))
    changes: list[Change] = []
    for kind, where, body, why in wanted:
        name = body["metadata"]["name"]
        have = actual.get((kind.plural, where, name))
        if have is None:
            changes.append(Change("create", kind, where, name, body, why))
            continue
        diff = _differs(kind, have, body, options)
        if diff:
            changes.append(Change("update", kind, where, name, body, f"{why} ({diff})"))
    return changes


# --------------------------------------------------------------------------- applying
def apply(api: KubeApi, changes: Iterable[Change], wait_s: float = 15.0) -> list[str]:
    """Make the changes in order (stops at the first that fails: KubernetesError); a create
    of an object that exists without our label updates it instead. A created
    namespace is ready for pods once its default service account exists: waited for (up to
    `wait_s`), so that the first Job's pods are not refused and put into backoff."""
    done: list[str] = []
    created: list[str] = []
    for change in changes:
        if change.action == "create":
            try:
                api.create(change.kind.path(change.namespace), change.body)
            except Conflict:  # there, but without our label (made by hand, or drifted)
                api.patch(change.kind.path(change.namespace, change.name), change.body)
            if change.kind is NAMESPACES:
                created.append(change.name)
        else:
            api.patch(change.kind.path(change.namespace, change.name), change.body)
        done.append(str(change))
    deadline = time.monotonic() + wait_s
    for namespace in created:
        while time.monotonic() < deadline:
            try:
                api.get(SERVICE_ACCOUNTS.path(namespace, "default"))
                break
            except NotFound:
                time.sleep(0.1)
        else:
            _log.warning("namespace %s has no default service account yet", namespace)
    return done
