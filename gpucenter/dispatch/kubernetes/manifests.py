"""What gpucenter writes into a cluster for one job: names, labels and the batch/v1 Job.

Pure functions of a `LaunchRequest` and the site's `JobShape` (no I/O), so the same request
always gives the same manifest, and the tests can read exactly what was sent.

- **Names.** A job's namespace is its project's (`namespace_for`). The Job is named after the
  gpucenter job and its run (``gpucenter-<id>-r<run>``): a second create of the same run is
  refused by the API server with 409, which is how a submit whose answer was lost (the API
  server died mid-request, or gpucenter did before recording it) finds its Job instead of
  starting a second one. Labels carry the same (`LABEL_JOB`, `LABEL_RUN`) and the gpucenter
  instance that manages it (`LABEL_INSTANCE`), which is what polls and adoption select by.
- **Gangs.** Every job is an Indexed Job with ``completions = parallelism = nodes``. With Kueue
  (the default) it is created *suspended* in the project's LocalQueue: Kueue admits the
  Workload of all its pods at once, or none of them, and only then unsuspends it, so a gang
  never holds part of its GPUs while it waits for the rest. Without Kueue the gang's pods are
  created together and pinned to the nodes gpucenter chose for them, which were free when it
  chose them; that is weaker (a pod of another tenant can still take one of them first).
- **Placement.** A ``nodeSelector`` on the GPU type label, and (``pin_nodes``) a required node
  affinity on the placement's node names (``matchFields metadata.name``: exact, whatever the
  nodes' hostname labels say); the pods of a multi-node gang repel each other per node.
- **Owner.** ``runAsUser``/``runAsGroup``/``fsGroup`` from the owner's ids where gpucenter
  knows them; the user name is an annotation. Pods get no service account token: a tenant's
  job has no business with the cluster's API.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gpucenter.dispatch.base import LaunchRequest

__all__ = [
    "ANNOTATION_OWNER",
    "CONTAINER",
    "JOB_NAME_LABEL",
    "LABEL_INSTANCE",
    "LABEL_JOB",
    "LABEL_PROJECT",
    "LABEL_RUN",
    "QUEUE_LABEL",
    "JobShape",
    "external_id",
    "job_manifest",
    "job_name",
    "namespace_for",
    "parse_external_id",
    "slug",
]

LABEL_INSTANCE = "gpucenter.io/instance"
LABEL_JOB = "gpucenter.io/job-id"
LABEL_RUN = "gpucenter.io/run"
LABEL_PROJECT = "gpucenter.io/project"
ANNOTATION_OWNER = "gpucenter.io/owner"
ANNOTATION_PROJECT = "gpucenter.io/project-name"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # set on every pod by the Job controller
CONTAINER = "main"
# A job's own env may not set these: they are the cluster's or gpucenter's.
_RESERVED_ENV = re.compile(r"^(GPUCENTER_|KUBERNETES_|JOB_COMPLETION_INDEX$)")
_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_DNS_LABEL = 63


def slug(text: str, limit: int = _DNS_LABEL) -> str:
    """`text` as a DNS-1123 label (lower case, digits and '-', at most `limit` long); a name
    that had to change gets a short digest of the original, so two never collide."""
    cleaned = _NOT_DNS.sub("-", text.lower()).strip("-")
    if cleaned == text and 0 < len(cleaned) <= limit:
        return cleaned
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    head = cleaned[: max(0, limit - len(digest) - 1)].rstrip("-")
    return f"{head}-{digest}" if head else f"x{digest}"


def namespace_for(project: str, prefix: str = "gpc-") -> str:
    """The namespace of a project's jobs, e.g. ``gpc-climate-ai`` for project climate-ai."""
    return prefix + slug(project, _DNS_LABEL - len(prefix))


def job_name(job_id: int, run: int) -> str:
    """The Job of one run of a gpucenter job (unique within its namespace)."""
    return f"gpucenter-{job_id}-r{run}"


def external_id(namespace: str, name: str) -> str:
    """What gpucenter records as the job's id at the site: ``<namespace>/<Job name>``."""
    return f"{namespace}/{name}"


def parse_external_id(value: str) -> tuple[str, str] | None:
    """(namespace, name) from `external_id`; None for anything else."""
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name or "/" in name:
        return None
    return namespace, name


@dataclass(frozen=True, slots=True)
class JobShape:
    """The site's choices that shape every Job (from its settings)."""

    instance: str = "gpucenter"
    queue: str | None = "gpucenter"
    """The LocalQueue each project namespace has (Kueue); None: plain Jobs, no Kueue."""
    default_image: str = "nvcr.io/nvidia/cuda:12.6.3-base-ubuntu24.04"
    gpu_resource: str = "nvidia.com/gpu"
    gpu_type_label: str = "gpucenter.io/gpu-type"
    pin_nodes: bool = True
    finished_ttl_s: int = 3600
    annotations_from_env: Mapping[str, str] = field(default_factory=dict)
    """Job env variable -> pod annotation: lets a job pass a chosen annotation to its pods
    (the test site's KWOK nodes read how long a pod "runs" from one)."""


def _env(request: LaunchRequest) -> list[dict[str, str]]:
    env = {k: v for k, v in request.env.items() if not _RESERVED_ENV.match(k)}
    env["GPUCENTER_JOB_ID"] = str(request.job_id)
    env["GPUCENTER_JOB_RUN"] = str(request.run)
    env["GPUCENTER_PROJECT"] = request.project
    env["GPUCENTER_NODES"] = str(request.gpu.nodes)
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


def _affinity(request: LaunchRequest, name: str, shape: JobShape) -> dict[str, Any] | None:
    affinity: dict[str, Any] = {}
    nodes = list(dict.fromkeys(p.node for p in request.placement))
    if shape.pin_nodes and nodes:
        # One term per node (terms are ORed): the API allows one value per metadata.name field.
        terms = [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
            for node in nodes
        ]
        affinity["nodeAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
        }
    if request.gpu.nodes > 1:  # one pod of the gang per node
        affinity["podAntiAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {JOB_NAME_LABEL: name}},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    return affinity or None


def job_manifest(request: LaunchRequest, namespace: str, shape: JobShape) -> dict[str, Any]:
    """The batch/v1 Job for one run of a job, ready to POST to `namespace`."""
    name = job_name(int(request.job_id), request.run)
    labels = {
        LABEL_INSTANCE: shape.instance,
        LABEL_JOB: str(request.job_id),
        LABEL_RUN: str(request.run),
        LABEL_PROJECT: slug(request.project),
    }
    job_labels = dict(labels)
    if shape.queue is not None:
        job_labels[QUEUE_LABEL] = shape.queue
    annotations = {ANNOTATION_OWNER: request.owner.username, ANNOTATION_PROJECT: request.project}
    pod_annotations = dict(annotations)
    for variable, annotation in shape.annotations_from_env.items():
        if variable in request.env:
            pod_annotations[annotation] = request.env[variable]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": request.image or shape.default_image,
        "command": ["/bin/sh", "-c", request.command],
        "env": _env(request),
        "resources": {"limits": {shape.gpu_resource: str(request.gpu.gpus_per_node)}},
    }
    if request.workdir:
        container["workingDir"] = request.workdir
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "nodeSelector": {shape.gpu_type_label: request.gpu.gpu_type},
        "containers": [container],
    }
    affinity = _affinity(request, name, shape)
    if affinity is not None:
        pod_spec["affinity"] = affinity
    owner = request.owner
    security = {
        key: value
        for key, value in (
            ("runAsUser", owner.uid),
            ("runAsGroup", owner.gid),
            ("fsGroup", owner.gid),
        )
        if value is not None
    }
    if security:
        pod_spec["securityContext"] = security
    nodes = request.gpu.nodes
    spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": nodes,
        "parallelism": nodes,
        "backoffLimit": 0,  # a failed pod fails the run; gpucenter decides about reruns
        "activeDeadlineSeconds": max(1, int(request.time_limit_s)),
        "ttlSecondsAfterFinished": shape.finished_ttl_s,
        "template": {
            "metadata": {"labels": labels, "annotations": pod_annotations},
            "spec": pod_spec,
        },
    }
    if shape.queue is not None:
        spec["suspend"] = True  # Kueue unsuspends it once the whole gang is admitted
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": job_labels,
            "annotations": annotations,
        },
        "spec": spec,
    }
