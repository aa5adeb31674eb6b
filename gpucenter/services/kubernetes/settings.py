"""A Kubernetes site's settings: how to reach the cluster and how gpucenter shapes its objects."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from gpucenter.dispatch.kubernetes.api import KubeApi
from gpucenter.dispatch.kubernetes.manifests import JobShape
from gpucenter.dispatch.kubernetes.tenancy import TenancyOptions

__all__ = ["KubernetesSettings"]


class KubernetesSettings(BaseSettings):
    """A Kubernetes site's settings, from GPUCENTER_KUBERNETES_* environment variables (or the
    ``kubernetes:`` mapping of its entry in the sites file)."""

    model_config = SettingsConfigDict(env_prefix="GPUCENTER_KUBERNETES_", extra="ignore")

    kubeconfig: Path | None = Field(
        default=None,
        description="kubeconfig of gpucenter's identity at the cluster; empty: the pod's "
        "service account in the cluster, else $KUBECONFIG or ~/.kube/config",
    )
    context: str | None = Field(default=None, description="kubeconfig context; empty: current")
    instance: str = Field(
        default="gpucenter",
        description="label value marking what this gpucenter manages (two instances sharing a "
        "cluster never touch each other's objects)",
    )
    namespace_prefix: str = Field(default="gpc-", description="a project's namespace: prefix+name")
    kueue: bool = Field(
        default=True,
        description="Kueue admits each Job as a whole (gangs all-or-nothing) from a LocalQueue "
        "per namespace; off: plain Jobs, ResourceQuota only",
    )
    queue: str = Field(default="gpucenter", description="the LocalQueue in each namespace")
    default_image: str = Field(
        default="nvcr.io/nvidia/cuda:12.6.3-base-ubuntu24.04",
        description="the container image of jobs that name none",
    )
    gpu_resource: str = "nvidia.com/gpu"
    gpu_type_label: str = Field(
        default="gpucenter.io/gpu-type", description="node label holding a node's GPU type"
    )
    block_label: str = Field(
        default="gpucenter.io/block", description="node label of its network block (topology)"
    )
    node_selector: str | None = Field(
        default=None, description="label selector for the nodes gpucenter may place jobs on"
    )
    pin_nodes: bool = Field(
        default=True, description="pods go to the nodes gpucenter's placement chose"
    )
    rbac: bool = Field(default=True, description="a Role for the project's members to read")
    user_prefix: str = Field(
        default="", description="the cluster's user name of a member: prefix + gpucenter name"
    )
    apply_sync: bool = Field(
        default=True,
        description="the scheduler leader applies the namespace sync; off: it only logs the "
        "plan (a dry run), and a project's first job finds no namespace until one is made",
    )
    annotations_from_env: dict[str, str] = Field(
        default_factory=dict,
        description="job env variable -> pod annotation (the KWOK test site reads a pod's "
        "duration from gpucenter.io/fake-duration)",
    )
    finished_ttl_s: int = Field(
        default=3600, ge=60, description="ended Jobs are removed by the cluster this much later"
    )
    log_dir: Path = Field(default=Path("var/k8s-jobs"), description="pod logs copied at the end")
    fetch_logs: bool = True
    gpu_types: tuple[str, ...] = Field(
        default=(), description="GPU types of the site; allocations for others do not count"
    )
    timeout_s: float = Field(default=30.0, gt=0, description="per API request")

    def api(self) -> KubeApi:
        return KubeApi.connect(self.kubeconfig, self.context, self.timeout_s)

    def shape(self) -> JobShape:
        """What every Job of this site looks like (see `manifests`)."""
        return JobShape(
            instance=self.instance,
            queue=self.queue if self.kueue else None,
            default_image=self.default_image,
            gpu_resource=self.gpu_resource,
            gpu_type_label=self.gpu_type_label,
            pin_nodes=self.pin_nodes,
            finished_ttl_s=self.finished_ttl_s,
            annotations_from_env=dict(self.annotations_from_env),
        )

    def tenancy(self) -> TenancyOptions:
        """What the namespace sync makes (see `tenancy`)."""
        return TenancyOptions(
            instance=self.instance,
            queue=self.queue if self.kueue else None,
            gpu_resource=self.gpu_resource,
            gpu_type_label=self.gpu_type_label,
            rbac=self.rbac,
        )
