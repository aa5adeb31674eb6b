"""Fixtures for the tests against a real Kubernetes API server (scripts/kubernetes/setup.sh).

`k8s_kubeconfig` (session) runs setup.sh once: a second or two when the test site is already
up; about a minute when only the binaries are cached; much longer the very first time on a
machine, when it builds the control plane from Go modules (CI runs setup.sh before the suite).
Where setup.sh says this machine cannot run it (exit 2: not root, no Go toolchain and no cached
build) the tests skip with its reason; in CI (CI=true) they fail instead, as does any other
failure: CI must run this suite.

Each test gets a namespace of its own (``gct-<hex>``), deleted at teardown with everything in
it, so tests never see each other's Jobs, pods or quotas. `kube_world` is gpucenter itself
wired to the site (see world.py): its own database, instance label and namespaces, removed
from the cluster at teardown.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "kubernetes" / "setup.sh"
CACHE = Path(os.environ.get("GPUCENTER_K8S_CACHE", "/var/cache/gpucenter-k8s"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: The first setup on a machine builds kube-apiserver and friends: allow it that long.
COLD_BUILD_TIMEOUT_S = 3600
T = TypeVar("T")

if TYPE_CHECKING:
    from tests.kubernetes.world import KubeWorld


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kubernetes: runs against a real Kubernetes API server")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give the first test of this suite time for a cold build when nothing is cached yet.

    pytest-timeout counts fixture set-up in the test's time; a session fixture that compiles
    the control plane would otherwise be cut off by the suite-wide limit.
    """
    here = Path(__file__).parent
    mine = [item for item in items if item.path.is_relative_to(here)]
    for item in mine:
        item.add_marker(pytest.mark.kubernetes)
    if mine and not any(CACHE.glob("kube-*/inputs.sha256")):
        mine[0].add_marker(pytest.mark.timeout(COLD_BUILD_TIMEOUT_S + 120))


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI must run the Kubernetes suite)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def k8s_kubeconfig() -> str:
    """Bring the test site up (idempotent) and return the admin kubeconfig's path."""
    try:
        done = subprocess.run(
            ["bash", str(SETUP)],
            capture_output=True,
            text=True,
            timeout=COLD_BUILD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"scripts/kubernetes/setup.sh did not finish: {exc}")
    if done.returncode == 2:
        _unavailable(f"Kubernetes cannot be set up here: {done.stderr.strip()[-500:]}")
    if done.returncode != 0:
        pytest.fail(f"scripts/kubernetes/setup.sh failed ({done.returncode}):\n{done.stderr}")
    lines = done.stdout.strip().splitlines()
    if not lines or not Path(lines[-1]).is_file():
        pytest.fail(f"setup.sh printed no kubeconfig path: {done.stdout!r}")
    return lines[-1]


@pytest.fixture(scope="session")
def k8s_client(k8s_kubeconfig: str) -> Any:
    """An ApiClient of the official `kubernetes` package, as the cluster admin."""
    return config.new_client_from_config(config_file=k8s_kubeconfig)


@pytest.fixture
def namespace(k8s_client: Any) -> Iterator[str]:
    """A fresh namespace for one test, removed with its contents afterwards."""
    core = client.CoreV1Api(k8s_client)
    name = f"gct-{uuid.uuid4().hex[:10]}"
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"gpucenter.io/test": "true"})
        )
    )
    # Pods need the namespace's default service account; the controller adds it promptly.
    wait_until(lambda: _has_default_sa(core, name), 30, f"service account {name}/default")
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


def _has_default_sa(core: Any, namespace: str) -> bool:
    try:
        core.read_namespaced_service_account("default", namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def wait_until(probe: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll `probe` every 0.2 s until it returns something truthy; fail after timeout_s.

    Tests wait on observed state, never on fixed sleeps: fast when the cluster is fast, and
    a clear message naming what never happened when it is not.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def kube_world(k8s_kubeconfig: str, tmp_path: Path) -> Iterator[KubeWorld]:
    """gpucenter with one Kubernetes site (the test site), users gcalice and gcbob."""
    from tests.kubernetes.world import make_world

    world = make_world(k8s_kubeconfig, tmp_path, f"gct{uuid.uuid4().hex[:8]}")
    try:
        yield world
    finally:
        world.ctx.dispatcher.shutdown()
        world.cleanup()
        world.ctx.engine.dispose()
