"""gpucenter with the least rights the README gives it (examples/kubernetes/gpucenter-rbac.yaml),
against the real API server's RBAC: as that service account, with a token of its own, it
reads the nodes, syncs a project's namespace (granting its members no more than it holds),
runs a job to its end and cancels another."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpucenter.dispatch.kubernetes.api import Conflict, KubeApi, KubernetesError
from gpucenter.domain.jobs import JobState
from gpucenter.persistence import repositories as repo
from gpucenter.services.identity.signin import caller_for
from gpucenter.services.jobs import manage
from tests.kubernetes.world import KubeWorld, make_world

RBAC = Path(__file__).resolve().parents[2] / "examples" / "kubernetes" / "gpucenter-rbac.yaml"
PATHS = {
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Namespace": "/api/v1/namespaces",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
}


def _documents(instance: str) -> list[dict[str, Any]]:
    """The README's RBAC, renamed for this test (its own role, binding and namespace)."""
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    system = f"{instance}-system"
    for doc in docs:
        meta = doc["metadata"]
        if doc["kind"] == "Namespace":
            meta["name"] = system
        elif doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            meta["name"] = f"gpucenter-{instance}"
        if "namespace" in meta:
            meta["namespace"] = system
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] = f"gpucenter-{instance}"
            doc["subjects"][0]["namespace"] = system
    return docs


@pytest.fixture
def least_rights(k8s_kubeconfig: str, tmp_path: Path) -> Iterator[KubeWorld]:
    instance = f"gct{uuid.uuid4().hex[:8]}"
    admin = KubeApi.connect(Path(k8s_kubeconfig))
    docs = _documents(instance)
    for doc in docs:
        path = PATHS[doc["kind"]].format(ns=doc["metadata"].get("namespace"))
        with contextlib.suppress(Conflict):
            admin.create(path, doc)
    system = f"{instance}-system"
    token = admin.create(
        f"/api/v1/namespaces/{system}/serviceaccounts/gpucenter/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )["status"]["token"]
    cluster = yaml.safe_load(Path(k8s_kubeconfig).read_text())["clusters"][0]["cluster"]
    kubeconfig = tmp_path / "gpucenter.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "site", "cluster": cluster}],
                "users": [{"name": "gpucenter", "user": {"token": token}}],
                "contexts": [
                    {"name": "gpucenter", "context": {"cluster": "site", "user": "gpucenter"}}
                ],
                "current-context": "gpucenter",
            }
        )
    )
    world = make_world(str(kubeconfig), tmp_path, instance, admin_kubeconfig=k8s_kubeconfig)
    try:
        yield world
    finally:
        world.ctx.dispatcher.shutdown()
        world.cleanup()
        for doc in reversed(docs):
            if doc["kind"] != "ServiceAccount":
                with contextlib.suppress(KubernetesError):
                    admin.delete(f"{PATHS[doc['kind']]}/{doc['metadata']['name']}")
        world.ctx.engine.dispose()


def test_gpucenter_runs_a_site_with_the_rights_the_readme_gives_it(
    least_rights: KubeWorld,
) -> None:
    w = least_rights
    # Not the admin: it may not, say, read secrets anywhere.
    account = f"system:serviceaccount:{w.instance}-system:gpucenter"
    assert not w.can(account, "list", "secrets", "default")
    assert w.can(account, "create", "jobs", "default", "batch")
    p = w.project("least", 10, "gcalice")
    assert w.sync()  # namespace, quota, queues, the members' Role and its binding
    done = w.submit("gcalice", p, 2, "h100", run_for="2s")
    stopped = w.submit("gcalice", p, 1, "b200", run_for=None)
    w.run_until(stopped, lambda r: r.state == JobState.RUNNING.value and not r.reason)
    with w.ctx.sessions() as s:
        caller = caller_for(s, repo.user_by_name(s, "gcalice"))
    manage.cancel(w.ctx, caller, stopped)
    w.run_all([done, stopped], lambda r: JobState(r.state).is_terminal, 120)
    assert w.row(done).state == JobState.COMPLETED.value, w.row(done).reason_detail
    assert w.row(stopped).state == JobState.CANCELLED.value, w.row(stopped).reason_detail
    assert w.k8s_jobs(stopped) == []
    assert w.can("gcalice", "get", "pods", w.namespace(p))
