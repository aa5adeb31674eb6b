"""gpucenter's jobs on a real Kubernetes API server (the test site: real kube-apiserver,
controllers, scheduler and Kueue; KWOK's fake GPU nodes): where they land, gangs, cancel,
ends, usage, images. Every assertion about the cluster is read back from the API server."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpucenter.dispatch.kubernetes.manifests import LABEL_JOB, LABEL_RUN, QUEUE_LABEL
from gpucenter.dispatch.kubernetes.states import parse_time
from gpucenter.domain.jobs import JobState
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import JobRow
from gpucenter.services.identity.signin import caller_for
from gpucenter.services.jobs import manage
from tests.kubernetes.world import KubeWorld, pod_seconds, wait_for

GPU = "nvidia.com/gpu"
TYPE_LABEL = "gpucenter.io/gpu-type"


def running(row: JobRow) -> bool:
    return row.state == JobState.RUNNING.value and not row.reason


def ended(row: JobRow) -> bool:
    return JobState(row.state).is_terminal


def test_two_tenants_land_in_their_namespaces_with_their_gpus_and_types(
    kube_world: KubeWorld,
) -> None:
    w = kube_world
    alpha = w.project("alpha", 10, "gcalice")
    beta = w.project("beta", 10, "gcbob")
    w.sync()
    a = w.submit("gcalice", alpha, 2, "h100", run_for="3s")
    b = w.submit("gcbob", beta, 4, "b200", run_for="3s")
    w.run_all([a, b], ended)

    for job_id, project, gpus, gpu_type in ((a, alpha, 2, "h100"), (b, beta, 4, "b200")):
        row = w.row(job_id)
        assert row.state == JobState.COMPLETED.value, row.reason_detail
        (job,) = w.k8s_jobs(job_id)  # one Job, in the project's own namespace
        assert job["metadata"]["namespace"] == w.namespace(project)
        assert row.external_id == f"{w.namespace(project)}/{job['metadata']['name']}"
        labels = job["metadata"]["labels"]
        assert labels[LABEL_JOB] == str(job_id) and labels[LABEL_RUN] == "1"
        assert labels[QUEUE_LABEL] == "gpucenter"  # admitted by Kueue from the project's queue
        (pod,) = w.pods(job_id)
        (container,) = pod["spec"]["containers"]
        assert container["resources"]["limits"][GPU] == str(gpus)
        assert container["resources"]["requests"][GPU] == str(gpus)
        assert pod["spec"]["automountServiceAccountToken"] is False
        # The node gpucenter placed it on, of the GPU type asked for.
        assert [p["node"] for p in row.placement] == [pod["spec"]["nodeName"]]
        assert w.node_labels(pod["spec"]["nodeName"])[TYPE_LABEL] == gpu_type
        # Charged exactly the pod's run time (by the cluster's clock) x its GPUs, once.
        assert w.ledger(job_id) == [pytest.approx(pod_seconds(pod) * gpus)]
        assert pod_seconds(pod) >= 3
        # KWOK's nodes run no containers and keep no logs: gpucenter says so, invents none.
        assert row.stdout_path and row.stderr_path
        assert Path(row.stdout_path).read_text() == ""
        err = Path(row.stderr_path).read_text()
        assert err.startswith("gpucenter: the cluster gave no logs for this run: pod ")
        assert "no pod logs" in row.reason_detail

    # Each tenant's members may read their own namespace and not the other's.
    assert w.can("gcalice", "list", "pods", w.namespace(alpha))
    assert not w.can("gcalice", "list", "pods", w.namespace(beta))
    assert w.can("gcbob", "get", "jobs", w.namespace(beta), "batch")
    assert not w.can("gcbob", "create", "pods", w.namespace(beta))  # read only


def test_a_two_node_gang_starts_all_or_nothing(kube_world: KubeWorld) -> None:
    """Kueue admits the whole gang or none of it: while the project's queue has room for
    one node's GPUs only, no pod of the gang exists; once there is room for both, both run,
    each on its own node of the two gpucenter chose."""
    w = kube_world
    gang = w.project("gang", 10, "gcalice", gpu_type="h100", max_gpus=16)
    w.sync()
    namespace = w.namespace(gang)
    # Someone at the site runs an 8-GPU Job straight into the project's queue (outside
    # gpucenter, which does not see it): half of the project's 16 GPUs are taken.
    w.admin.create(
        f"/apis/batch/v1/namespaces/{namespace}/jobs",
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "by-hand", "labels": {QUEUE_LABEL: "gpucenter"}},
            "spec": {
                "suspend": True,
                "backoffLimit": 0,
                "template": {
                    "metadata": {"annotations": {"gpucenter.io/fake-duration": "8s"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "nodeSelector": {TYPE_LABEL: "h100"},
                        "containers": [
                            {
                                "name": "main",
                                "image": "registry.invalid/by-hand:1",
                                "resources": {"limits": {GPU: "8"}},
                            }
                        ],
                    },
                },
            },
        },
    )

    def by_hand_running() -> bool:
        pods = w.admin.list(f"/api/v1/namespaces/{namespace}/pods", "job-name=by-hand")
        return any(p["status"].get("phase") == "Running" for p in pods)

    wait_for("the by-hand Job runs", by_hand_running, 60)

    job_id = w.submit("gcalice", gang, 8, "h100", nodes=2, run_for="4s")
    row = w.run_until(job_id, lambda r: r.reason == "KueueQueued" and "Kueue" in r.reason_detail)
    assert row.state == JobState.RUNNING.value  # handed to the cluster, which holds it whole
    assert "insufficient" in row.reason_detail or "quota" in row.reason_detail, row.reason_detail
    (job,) = w.k8s_jobs(job_id)
    assert job["spec"]["suspend"] is True
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    assert w.pods(job_id) == []  # not one pod holds a GPU while the gang waits

    row = w.run_until(job_id, running, 90)  # the by-hand Job ended: the gang is admitted
    pods = w.pods(job_id)
    assert len(pods) == 2 and all(p["status"]["phase"] == "Running" for p in pods)
    nodes = sorted(p["spec"]["nodeName"] for p in pods)
    assert len(set(nodes)) == 2  # one pod per node
    assert nodes == sorted(p["node"] for p in row.placement)  # where gpucenter placed it
    starts = [parse_time(p["status"]["startTime"]) for p in pods]
    assert row.started_at is not None
    assert row.started_at.timestamp() == min(s for s in starts if s is not None)
    row = w.run_until(job_id, ended, 60)
    assert row.state == JobState.COMPLETED.value, row.reason_detail
    # Two nodes x 8 GPUs, each pod charged for the time it ran.
    assert w.ledger(job_id)[0] >= 2 * 8 * 4


def test_cancel_deletes_the_job_and_its_pods(kube_world: KubeWorld) -> None:
    w = kube_world
    p = w.project("cancel", 10, "gcalice")
    w.sync()
    job_id = w.submit("gcalice", p, 2, "b200", run_for=None)  # runs until stopped
    w.run_until(job_id, running)
    wait_for(
        "its pod runs",
        lambda: any(x["status"].get("phase") == "Running" for x in w.pods(job_id)),
        30,
    )
    with w.ctx.sessions() as s:
        caller = caller_for(s, repo.user_by_name(s, "gcalice"))
    manage.cancel(w.ctx, caller, job_id)
    row = w.run_until(job_id, ended, 60)
    assert row.state == JobState.CANCELLED.value, row.reason_detail
    assert w.k8s_jobs(job_id) == [] and w.pods(job_id) == []  # Job and pods are gone
    (charged,) = w.ledger(job_id)
    assert row.started_at is not None and row.ended_at is not None
    assert (
        charged == pytest.approx((row.ended_at - row.started_at).total_seconds() * 2)
        and charged > 0
    )


def test_time_limit_and_exit_codes_come_from_the_cluster(kube_world: KubeWorld) -> None:
    w = kube_world
    p = w.project("ends", 10, "gcalice")
    w.sync()
    timeout = w.submit("gcalice", p, 1, "h100", run_for=None, time_limit_s=3)
    crash = w.submit("gcalice", p, 1, "b200", run_for="2s", exit_code=3)
    w.run_all([timeout, crash], ended)

    row = w.row(timeout)
    assert row.state == JobState.TIMEOUT.value, row.reason_detail
    assert "DeadlineExceeded" in row.reason_detail
    (charged,) = w.ledger(timeout)
    assert 0 < charged <= 3  # never beyond the time limit x 1 GPU

    row = w.row(crash)
    assert row.state == JobState.FAILED.value and row.exit_code == 3, row.reason_detail


def test_the_jobs_image_is_the_containers_and_a_default_when_none(
    kube_world: KubeWorld,
) -> None:
    w = kube_world
    p = w.project("image", 10, "gcalice")
    w.sync()
    own = w.submit("gcalice", p, 1, "h100", image="registry.invalid/team/train:2.1")
    default = w.submit("gcalice", p, 1, "h100")
    w.run_all([own, default], ended)
    (pod,) = w.pods(own)
    assert pod["spec"]["containers"][0]["image"] == "registry.invalid/team/train:2.1"
    (pod,) = w.pods(default)
    assert pod["spec"]["containers"][0]["image"] == w.settings.default_image
    assert pod["spec"]["containers"][0]["command"] == ["/bin/sh", "-c", "python train.py"]
