"""The namespace sync against the real API server and Kueue: a dry run by default, applied once
(and then nothing to do), an exhausted allocation's namespace admitting no new pods until a
top-up releases it, hand edits (drift) planned back, scheduled from the scheduler leader."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from gpucenter.dispatch.kubernetes.api import (
    CLUSTER_QUEUES,
    JOBS,
    LOCAL_QUEUES,
    NAMESPACES,
    PODS,
    QUOTAS,
    ROLE_BINDINGS,
    KubernetesError,
    NotFound,
)
from gpucenter.dispatch.kubernetes.manifests import QUEUE_LABEL
from gpucenter.dispatch.kubernetes.tenancy import QUOTA_NAME, ROLE_NAME, flavor_name
from gpucenter.domain.jobs import JobState, WaitReason
from gpucenter.services.identity import accounts
from gpucenter.services.periodic import site_sync_task
from gpucenter.services.scheduling.cycle import run_pass
from gpucenter.services.scheduling.tasks import periodic_tasks
from tests.kubernetes.world import KubeWorld, wait_for

GPU = "nvidia.com/gpu"


def gpu_pod(name: str, gpus: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": "registry.invalid/by-hand:1",
                    "resources": {"limits": {GPU: str(gpus)}},
                }
            ],
        },
    }


def queue_quotas(w: KubeWorld, namespace: str) -> tuple[dict[str, int], str]:
    cq = w.admin.get(CLUSTER_QUEUES.path(None, namespace))
    flavors = cq["spec"]["resourceGroups"][0]["flavors"]
    quotas = {f["name"]: int(f["resources"][0]["nominalQuota"]) for f in flavors}
    return quotas, cq["spec"]["stopPolicy"]


def quota_hard(w: KubeWorld, namespace: str) -> str:
    return str(w.admin.get(QUOTAS.path(namespace, QUOTA_NAME))["spec"]["hard"][f"requests.{GPU}"])


def wait_quota_status(w: KubeWorld, namespace: str, value: str) -> None:
    """The quota admission checks the quota's status: wait until the controller set it."""

    def current() -> bool:
        status = w.admin.get(QUOTAS.path(namespace, QUOTA_NAME)).get("status") or {}
        return str((status.get("hard") or {}).get(f"requests.{GPU}")) == value

    wait_for(f"quota status {value} in {namespace}", current, 30)


def test_the_sync_is_a_dry_run_until_applied_and_applying_twice_changes_nothing(
    kube_world: KubeWorld,
) -> None:
    w = kube_world
    alpha = w.project("alpha", 10, "gcalice", gpu_type="h100", max_gpus=16)
    beta = w.project("beta", 10, "gcbob", "gcalice")  # any GPU type, no concurrency cap
    plan = [str(c) for c in w.sync(apply=False)]
    ns_a, ns_b = w.namespace(alpha), w.namespace(beta)
    assert f"create resourcequotas {ns_a}/{QUOTA_NAME}: 16 GPUs at once" in plan
    assert f"create resourcequotas {ns_b}/{QUOTA_NAME}: 64 GPUs at once" in plan
    assert f"create rolebindings {ns_b}/{ROLE_NAME}: 2 members" in plan
    for ns in (ns_a, ns_b):  # a dry run made nothing
        with pytest.raises(NotFound):
            w.admin.get(NAMESPACES.path(None, ns))

    applied = w.sync()
    assert [str(c) for c in applied] == plan
    assert quota_hard(w, ns_a) == "16" and quota_hard(w, ns_b) == "64"
    h100, b200 = flavor_name(w.instance, "h100"), flavor_name(w.instance, "b200")
    assert queue_quotas(w, ns_a) == ({h100: 16, b200: 0}, "None")
    assert queue_quotas(w, ns_b) == ({h100: 32, b200: 32}, "None")
    lq = w.admin.get(LOCAL_QUEUES.path(ns_a, "gpucenter"))
    assert lq["spec"]["clusterQueue"] == ns_a
    binding = w.admin.get(ROLE_BINDINGS.path(ns_b, ROLE_NAME))
    assert sorted(s["name"] for s in binding["subjects"]) == ["gcalice", "gcbob"]
    assert w.sync() == []  # in step: nothing to do


def test_an_exhausted_allocations_namespace_admits_no_new_pods_until_a_top_up(
    kube_world: KubeWorld,
) -> None:
    w = kube_world
    p = w.project("held", 1.0, "gcalice")
    w.sync()
    ns = w.namespace(p)
    wait_quota_status(w, ns, "64")

    # gpucenter's accounting charges the whole GPU-hour: the allocation is exhausted, and
    # its programme (none: the default) holds exhausted projects.
    w.charge(p, 3600.0, "test:usage")
    plan = [str(c) for c in w.sync(apply=False)]
    assert plan == [
        f"update resourcequotas {ns}/{QUOTA_NAME}: held: its allocations are used up "
        f"(requests.{GPU} 64 -> 0)",
        f"update clusterqueues {ns}: held: its allocations are used up (stopPolicy None -> Hold)",
    ]
    w.sync()
    wait_quota_status(w, ns, "0")
    with pytest.raises(KubernetesError) as refused:  # anyone's pod, not only gpucenter's
        w.admin.create(PODS.path(ns), gpu_pod("by-hand"))
    assert refused.value.status == 403 and "exceeded quota" in refused.value.message
    # A Job sent to the project's queue directly is held by Kueue (no pod is even tried).
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "queued", "labels": {QUEUE_LABEL: "gpucenter"}},
        "spec": {
            "suspend": True,
            "backoffLimit": 0,
            "template": {"spec": gpu_pod("x")["spec"]},
        },
    }
    w.admin.create(JOBS.path(ns), job)
    # gpucenter does not start the project's jobs either: they wait, saying why.
    job_id = w.submit("gcalice", p, 1, "h100")
    run_pass(w.ctx)
    row = w.row(job_id)
    assert row.state == JobState.PENDING.value
    assert row.reason == WaitReason.ALLOCATION_EXHAUSTED.value, row.reason_detail
    assert w.admin.get(JOBS.path(ns, "queued"))["spec"]["suspend"] is True

    # A credit gives half an hour back: active again, and the next sync releases it.
    w.charge(p, -1800.0, "test:credit")
    plan = [str(c) for c in w.sync(apply=False)]
    assert plan == [
        f"update resourcequotas {ns}/{QUOTA_NAME}: 64 GPUs at once (requests.{GPU} 0 -> 64)",
        f"update clusterqueues {ns}: 64 GPUs at once (stopPolicy Hold -> None)",
    ]
    w.sync()
    wait_quota_status(w, ns, "64")
    w.admin.create(PODS.path(ns), gpu_pod("by-hand"))  # admitted now
    wait_for(
        "Kueue admits the queued Job",
        lambda: not w.admin.get(JOBS.path(ns, "queued"))["spec"].get("suspend"),
        60,
    )
    row = w.run_until(job_id, lambda r: JobState(r.state).is_terminal, 90)
    assert row.state == JobState.COMPLETED.value, row.reason_detail


def test_drift_is_planned_back_and_the_leader_applies_the_sync(
    kube_world: KubeWorld, caplog: pytest.LogCaptureFixture
) -> None:
    w = kube_world
    p = w.project("drift", 10, "gcalice", gpu_type="b200", max_gpus=8)
    w.sync()
    ns = w.namespace(p)
    # Hand edits at the cluster, and a new member in gpucenter.
    w.admin.patch(QUOTAS.path(ns, QUOTA_NAME), {"spec": {"hard": {f"requests.{GPU}": "100"}}})
    w.admin.patch(CLUSTER_QUEUES.path(None, ns), {"spec": {"stopPolicy": "Hold"}})
    with w.ctx.sessions.begin() as s:
        accounts.add_member(s, p, "gcbob")
    plan = sorted(str(c) for c in w.sync(apply=False))
    assert plan == sorted(
        [
            f"update resourcequotas {ns}/{QUOTA_NAME}: 8 GPUs at once (requests.{GPU} 100 -> 8)",
            f"update clusterqueues {ns}: 8 GPUs at once (stopPolicy Hold -> None)",
            f"update rolebindings {ns}/{ROLE_NAME}: 2 members "
            "(members ['gcalice'] -> ['gcalice', 'gcbob'])",
        ]
    )

    # The scheduler leader runs the sync on its interval. A site whose apply_sync is off
    # only logs the plan...
    (site,) = w.ctx.site_runtimes()
    applying = site.settings
    assert applying is not None
    site.settings = applying.model_copy(update={"apply_sync": False})
    (task,) = [t for t in periodic_tasks(w.ctx) if t.name == site_sync_task(site.name)]
    with caplog.at_level(logging.INFO):
        assert "planned (apply_sync is off)" in task.run(w.ctx)
    assert "namespace sync (dry run, apply_sync is off) would update resourcequotas" in caplog.text
    assert quota_hard(w, ns) == "100"
    # ... one that applies (the default) corrects the drift, once per interval.
    site.settings = applying
    ran = w.ctx.now()
    assert not task.schedule.due(ran + timedelta(seconds=10), ran)  # not before the interval
    assert task.schedule.due(ran + timedelta(seconds=61), ran)
    assert "applied" in task.run(w.ctx)
    assert quota_hard(w, ns) == "8"
    assert queue_quotas(w, ns)[1] == "None"
    assert w.can("gcbob", "list", "pods", ns)
    assert w.sync(apply=False) == []
