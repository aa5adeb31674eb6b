"""Smoke tests of the Kubernetes test site: the real API server, scheduler, controllers, KWOK.

What gpucenter's Kubernetes dispatcher will rely on, checked against the cluster itself with
the official client: a GPU Job lands on a node of the GPU type it selects, runs and completes;
a ResourceQuota on `requests.nvidia.com/gpu` refuses a pod beyond it; Kueue admits a Job within
a ClusterQueue's quota and holds one beyond it until the first ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kubernetes.conftest import wait_until

GPU = "nvidia.com/gpu"
GPU_TYPE_LABEL = "gpucenter.io/gpu-type"
FAKE_DURATION = "gpucenter.io/fake-duration"  # KWOK stage: the pod ends after this long
FAKE_EXIT_CODE = "gpucenter.io/fake-exit-code"  # ... with this exit code ("0": Succeeded)
KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def gpu_job(
    name: str,
    gpus: int,
    gpu_type: str | None = None,
    run_for: str | None = None,
    queue: str | None = None,
    exit_code: int | None = None,
) -> client.V1Job:
    """A one-pod batch/v1 Job asking for `gpus` GPUs (small builder for these tests)."""
    annotations = {FAKE_DURATION: run_for} if run_for else {}
    if exit_code is not None:
        annotations[FAKE_EXIT_CODE] = str(exit_code)
    labels = {QUEUE_LABEL: queue} if queue else None
    container = client.V1Container(
        name="main",
        image="registry.invalid/gpucenter/train:1",  # never pulled: KWOK runs no containers
        command=["python", "train.py"],
        resources=client.V1ResourceRequirements(limits={GPU: str(gpus)}),
    )
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1JobSpec(
            backoff_limit=0,
            suspend=True if queue else None,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(annotations=annotations or None),
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[container],
                    node_selector={GPU_TYPE_LABEL: gpu_type} if gpu_type else None,
                ),
            ),
        ),
    )


def job_pods(core: client.CoreV1Api, namespace: str, job: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items)


def job_condition(batch: client.BatchV1Api, namespace: str, job: str, kind: str) -> bool:
    status = batch.read_namespaced_job_status(job, namespace).status
    return any(c.type == kind and c.status == "True" for c in status.conditions or [])


def test_fake_gpu_nodes_have_two_types_and_gpu_capacity(k8s_client: Any) -> None:
    nodes = client.CoreV1Api(k8s_client).list_node(label_selector="gpucenter.io/fake-node=kwok")
    assert nodes.items, "no fake GPU nodes"
    types = {n.metadata.labels[GPU_TYPE_LABEL] for n in nodes.items}
    assert len(types) >= 2, types
    for node in nodes.items:
        assert node.status.allocatable[GPU] == "8"
        assert node.metadata.labels["gpucenter.io/block"].startswith("block-")
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True", node.metadata.name


def test_gpu_job_lands_on_its_gpu_type_runs_and_completes(k8s_client: Any, namespace: str) -> None:
    core, batch = client.CoreV1Api(k8s_client), client.BatchV1Api(k8s_client)
    batch.create_namespaced_job(namespace, gpu_job("train", 2, gpu_type="b200", run_for="2s"))
    # A second Job with no duration: it must be Running (and stay so) while the first ends.
    batch.create_namespaced_job(namespace, gpu_job("serve", 1, gpu_type="h100"))

    wait_until(lambda: job_condition(batch, namespace, "train", "Complete"), 90, "train Complete")
    (pod,) = job_pods(core, namespace, "train")
    assert pod.status.phase == "Succeeded"
    assert pod.spec.containers[0].resources.requests[GPU] == "2"
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels[GPU_TYPE_LABEL] == "b200"
    (state,) = pod.status.container_statuses
    assert state.state.terminated.exit_code == 0
    assert state.state.terminated.finished_at >= pod.status.start_time

    serving = wait_until(
        lambda: [p for p in job_pods(core, namespace, "serve") if p.status.phase == "Running"],
        60,
        "serve Running",
    )
    assert core.read_node(serving[0].spec.node_name).metadata.labels[GPU_TYPE_LABEL] == "h100"
    assert not job_condition(batch, namespace, "serve", "Complete")


def test_a_pod_that_exits_non_zero_fails_its_job(k8s_client: Any, namespace: str) -> None:
    core, batch = client.CoreV1Api(k8s_client), client.BatchV1Api(k8s_client)
    batch.create_namespaced_job(namespace, gpu_job("crash", 1, run_for="1s", exit_code=3))
    wait_until(lambda: job_condition(batch, namespace, "crash", "Failed"), 90, "crash Failed")
    (pod,) = job_pods(core, namespace, "crash")
    assert pod.status.phase == "Failed"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 3


def test_resource_quota_refuses_gpus_beyond_it(k8s_client: Any, namespace: str) -> None:
    core = client.CoreV1Api(k8s_client)
    core.create_namespaced_resource_quota(
        namespace,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="gpus"),
            spec=client.V1ResourceQuotaSpec(hard={f"requests.{GPU}": "4"}),
        ),
    )
    # Admission checks against the quota's status: wait until the controller has set it.
    wait_until(
        lambda: core.read_namespaced_resource_quota("gpus", namespace).status.hard or {},
        30,
        "quota status",
    )

    def pod(name: str, gpus: int) -> client.V1Pod:
        return client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PodSpec(
                restart_policy="Never",
                containers=[
                    client.V1Container(
                        name="main",
                        image="registry.invalid/gpucenter/train:1",
                        resources=client.V1ResourceRequirements(limits={GPU: str(gpus)}),
                    )
                ],
            ),
        )

    core.create_namespaced_pod(namespace, pod("fits", 4))
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(namespace, pod("beyond", 1))
    assert refused.value.status == 403
    assert "exceeded quota" in str(refused.value.body)
    used = wait_until(
        lambda: (core.read_namespaced_resource_quota("gpus", namespace).status.used or {}).get(
            f"requests.{GPU}"
        ),
        30,
        "quota usage",
    )
    assert used == "4"


@pytest.fixture
def kueue_queue(k8s_client: Any, namespace: str) -> Iterator[str]:
    """A ResourceFlavor (h100 nodes), a ClusterQueue of 4 GPUs and a LocalQueue in `namespace`.

    Skips where Kueue is not installed (setup.sh with K8S_KUEUE=0).
    """
    # setup.sh installs Kueue's webhooks while Kueue runs and removes them with K8S_KUEUE=0.
    admission = client.AdmissionregistrationV1Api(k8s_client)
    try:
        admission.read_validating_webhook_configuration("kueue-validating-webhook-configuration")
    except ApiException as exc:
        if exc.status == 404:
            pytest.skip("Kueue is not installed on the test site (K8S_KUEUE=0)")
        raise
    custom = client.CustomObjectsApi(k8s_client)
    suffix = uuid.uuid4().hex[:8]
    flavor, cq = f"gct-h100-{suffix}", f"gct-cq-{suffix}"
    custom.create_cluster_custom_object(
        KUEUE_GROUP,
        KUEUE_VERSION,
        "resourceflavors",
        {
            "apiVersion": f"{KUEUE_GROUP}/{KUEUE_VERSION}",
            "kind": "ResourceFlavor",
            "metadata": {"name": flavor},
            "spec": {"nodeLabels": {GPU_TYPE_LABEL: "h100"}},
        },
    )
    custom.create_cluster_custom_object(
        KUEUE_GROUP,
        KUEUE_VERSION,
        "clusterqueues",
        {
            "apiVersion": f"{KUEUE_GROUP}/{KUEUE_VERSION}",
            "kind": "ClusterQueue",
            "metadata": {"name": cq},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "resourceGroups": [
                    {
                        "coveredResources": [GPU],
                        "flavors": [
                            {"name": flavor, "resources": [{"name": GPU, "nominalQuota": 4}]}
                        ],
                    }
                ],
            },
        },
    )
    custom.create_namespaced_custom_object(
        KUEUE_GROUP,
        KUEUE_VERSION,
        namespace,
        "localqueues",
        {
            "apiVersion": f"{KUEUE_GROUP}/{KUEUE_VERSION}",
            "kind": "LocalQueue",
            "metadata": {"name": "gpus"},
            "spec": {"clusterQueue": cq},
        },
    )
    try:
        yield "gpus"
    finally:
        for plural, name in (("clusterqueues", cq), ("resourceflavors", flavor)):
            try:
                custom.delete_cluster_custom_object(KUEUE_GROUP, KUEUE_VERSION, plural, name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def test_kueue_admits_within_quota_and_holds_beyond_it(
    k8s_client: Any, namespace: str, kueue_queue: str
) -> None:
    core, batch = client.CoreV1Api(k8s_client), client.BatchV1Api(k8s_client)
    custom = client.CustomObjectsApi(k8s_client)

    def suspended(job: str) -> bool:
        return bool(batch.read_namespaced_job(job, namespace).spec.suspend)

    def workload_of(job: str) -> dict[str, Any] | None:
        listed = custom.list_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, namespace, "workloads"
        )
        for wl in listed["items"]:
            owners = wl["metadata"].get("ownerReferences", [])
            if any(o["kind"] == "Job" and o["name"] == job for o in owners):
                return dict(wl)
        return None

    def condition(wl: dict[str, Any] | None, kind: str) -> str | None:
        for cond in (wl or {}).get("status", {}).get("conditions", []):
            if cond["type"] == kind:
                return str(cond["status"])
        return None

    batch.create_namespaced_job(namespace, gpu_job("big", 4, queue=kueue_queue))
    wait_until(lambda: not suspended("big"), 60, "Kueue to admit 'big' (4 of 4 GPUs)")
    running = wait_until(
        lambda: [p for p in job_pods(core, namespace, "big") if p.status.phase == "Running"],
        60,
        "big Running",
    )
    # The flavor's node labels were injected: the pod sits on an h100 node.
    node = core.read_node(running[0].spec.node_name)
    assert node.metadata.labels[GPU_TYPE_LABEL] == "h100"

    batch.create_namespaced_job(namespace, gpu_job("more", 2, queue=kueue_queue))
    held = wait_until(lambda: workload_of("more"), 30, "a Workload for 'more'")
    wait_until(
        lambda: condition(workload_of("more"), "QuotaReserved") == "False",
        30,
        "'more' to be evaluated and held",
    )
    assert held["spec"]["queueName"] == kueue_queue
    assert suspended("more")
    assert condition(workload_of("more"), "Admitted") != "True"
    assert not job_pods(core, namespace, "more")

    # Not broken, only waiting: once 'big' is gone, 'more' is admitted.
    batch.delete_namespaced_job("big", namespace, propagation_policy="Background")
    wait_until(lambda: not suspended("more"), 60, "Kueue to admit 'more' after 'big' left")
    assert condition(workload_of("more"), "Admitted") == "True"
