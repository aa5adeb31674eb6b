"""1,000 GPU jobs onto 500 fake GPU nodes of the Kubernetes test site: through gpucenter, and
the same Jobs created directly with Kueue admission, in one run.

Needs the test site (scripts/kubernetes/setup.sh, as root); the script brings it to
``--nodes`` nodes first (setup.sh with K8S_NODES) and, with ``--restore-nodes``, back after.

- **gpucenter**: one organisation, a user and ``--tenants`` projects with big allocations,
  their namespaces made by the namespace sync, the jobs submitted through gpucenter's
  submission service (timed apart: ``submit_s``). Then scheduling passes as the scheduler
  loop runs them: the core places every job on the site's nodes, the Kubernetes dispatcher
  creates each one's Job (suspended in its project's LocalQueue, pinned to the nodes the
  core chose), Kueue admits, the scheduler binds, KWOK runs the pods. ``gpucenter_s``: from
  the first pass to the moment the API server lists every pod Running.
- **direct**: the same 1,000 Jobs (the manifests gpucenter would send, without node pinning:
  the default scheduler places them) created one after the other with the same client, in
  the same layout (a namespace, ClusterQueue and LocalQueue per tenant, each with room for
  all its jobs); ``direct_s``: from the first create to every pod Running.

Both count Running pods from the API server the same way. Jobs are 1, 2 or 4 GPUs, h100 and
b200 by turns (about 2,300 of the site's 4,000 GPUs, so any placement fits), and run until
deleted. The last line printed is one JSON object: both times and ``ratio`` (gpucenter_s /
direct_s).

    sudo .venv/bin/python bench/k8s_dispatch.py --jobs 1000 --nodes 500 --restore-nodes 8 \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine.url import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpucenter.config import Settings  # noqa: E402
from gpucenter.dispatch.base import JobOwner, LaunchRequest  # noqa: E402
from gpucenter.dispatch.kubernetes.api import (  # noqa: E402
    CLUSTER_QUEUES,
    FLAVORS,
    JOBS,
    NAMESPACES,
    NODES,
    PODS,
    KubeApi,
    KubernetesUnavailable,
)
from gpucenter.dispatch.kubernetes.manifests import (  # noqa: E402
    LABEL_INSTANCE,
    JobShape,
    job_manifest,
)
from gpucenter.dispatch.kubernetes.tenancy import (  # noqa: E402
    ProjectTenancy,
    TenancyOptions,
    TenancyState,
    apply,
    plan,
)
from gpucenter.domain.ids import JobId, ProjectId  # noqa: E402
from gpucenter.domain.jobs import GpuRequest  # noqa: E402
from gpucenter.persistence import repositories as repo  # noqa: E402
from gpucenter.persistence.db import migrate  # noqa: E402
from gpucenter.services.identity import accounts  # noqa: E402
from gpucenter.services.identity.signin import caller_for  # noqa: E402
from gpucenter.services.jobs import manage as jobs  # noqa: E402
from gpucenter.services.jobs.submission import JobForm  # noqa: E402
from gpucenter.services.kubernetes.settings import KubernetesSettings  # noqa: E402
from gpucenter.services.kubernetes.sync import sync_site  # noqa: E402
from gpucenter.services.scheduling.cycle import run_pass  # noqa: E402
from gpucenter.services.wiring import build_context, ensure_site  # noqa: E402

SETUP = ROOT / "scripts" / "kubernetes" / "setup.sh"
SHAPES = (1, 2, 4)
TYPES = ("h100", "b200")


def log(message: str) -> None:
    print(f"[k8s-bench] {message}", file=sys.stderr, flush=True)


def setup_site(nodes: int) -> str:
    """The test site with `nodes` fake nodes; its admin kubeconfig."""
    t0 = time.monotonic()
    done = subprocess.run(
        ["bash", str(SETUP)],
        env={**os.environ, "K8S_NODES": str(nodes)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"setup.sh failed ({done.returncode}):\n{done.stderr[-3000:]}")
    log(f"test site with {nodes} nodes ready in {time.monotonic() - t0:.1f}s")
    return done.stdout.strip().splitlines()[-1]


def shape(i: int) -> tuple[int, str]:
    return SHAPES[i % len(SHAPES)], TYPES[(i // len(SHAPES)) % len(TYPES)]


def running_pods(api: KubeApi, instance: str) -> int:
    pods = api.list(PODS.path(), f"{LABEL_INSTANCE}={instance}")
    return sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Running")


class AllRunning:
    """Counts the instance's Running pods every second from a thread of its own (its own
    client), so that when they are all up is seen within a second whatever the main loop
    is busy with; `at` is the monotonic time it saw them all."""

    def __init__(self, kubeconfig: str, instance: str, expected: int, min_nodes: int) -> None:
        self.min_nodes = min_nodes
        self._api = KubeApi.connect(Path(kubeconfig))
        self._instance = instance
        self._expected = expected
        self.at: float | None = None
        self.count = 0
        self.nodes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        checked = 0.0
        while not self._stop.is_set():
            if time.monotonic() - checked > 10:
                checked = time.monotonic()
                with contextlib.suppress(KubernetesUnavailable):
                    self.nodes = len(self._api.list(NODES.path(), "gpucenter.io/fake-node=kwok"))
            # A list the loaded API server cannot serve now: the next one.
            with contextlib.suppress(KubernetesUnavailable):
                self.count = running_pods(self._api, self._instance)
            if self.count >= self._expected:
                self.at = time.monotonic()
                return
            self._stop.wait(1.0)

    def check(self, t0: float, what: str) -> None:
        """Give up after half an hour, or at once when the site lost nodes under the run
        (another setup.sh with fewer K8S_NODES): pods pinned to them would never run."""
        if self.nodes and self.nodes < self.min_nodes:
            self.stop()
            sys.exit(f"{what}: the test site went down to {self.nodes} nodes during the run")
        if time.monotonic() - t0 > 1800:
            self.stop()
            sys.exit(f"{what}: only {self.count} pods running after 1800s")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def cleanup(api: KubeApi, instance: str, timeout: float = 900) -> None:
    """Remove the instance's Jobs and pods at once (no grace: KWOK's pods run nothing),
    then its namespaces, queues and flavors; wait until no pod is left, so that the next
    run finds every node free."""
    selector = f"{LABEL_INSTANCE}={instance}"
    for ns in api.list(NAMESPACES.path(), selector):
        name = ns["metadata"]["name"]
        api.request("DELETE", JOBS.path(name), query=[("propagationPolicy", "Background")])
        api.request("DELETE", PODS.path(name), query=[("gracePeriodSeconds", "0")])
    for kind in (NAMESPACES, CLUSTER_QUEUES, FLAVORS):
        for obj in api.list(kind.path(), selector):
            api.delete(kind.path(None, obj["metadata"]["name"]), "Background")
    deadline = time.monotonic() + timeout
    while True:
        try:
            if not api.list(PODS.path(), selector):
                return
        except KubernetesUnavailable:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"pods of {instance} still there after {timeout}s")
        time.sleep(2)


def fresh_database(base: str, tmp: Path) -> tuple[str, str | None]:
    """A new database for the run: a PostgreSQL one on the server `base` names (dropped
    afterwards), or a SQLite file when `base` is empty or SQLite."""
    if not base or make_url(base).get_backend_name() == "sqlite":
        return f"sqlite:///{tmp / 'gpucenter.db'}", None
    name = f"gpucenter_k8sbench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(base).set(database=name).render_as_string(hide_password=False), name


def drop_database(base: str, name: str) -> None:
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def through_gpucenter(
    kubeconfig: str, n_jobs: int, tenants: int, nodes: int, tmp: Path, url: str
) -> dict[str, float]:
    instance = f"bench-{uuid.uuid4().hex[:6]}"
    sites = tmp / "sites.yaml"
    sites.write_text(
        "sites:\n  - name: kube\n    kind: kubernetes\n    kubernetes:\n"
        f"      kubeconfig: {kubeconfig}\n      instance: {instance}\n"
        f"      namespace_prefix: {instance}-\n      log_dir: {tmp / 'logs'}\n"
    )
    migrate(url)
    ctx = build_context(Settings(var_dir=tmp / "var", database_url=url, sites_file=sites))
    ensure_site(ctx)
    (site,) = ctx.site_runtimes()
    assert isinstance(site.settings, KubernetesSettings)
    api = KubeApi.connect(Path(kubeconfig))
    now = datetime.now(tz=UTC)
    projects = [f"t{i:02d}" for i in range(tenants)]
    with ctx.sessions.begin() as s:
        accounts.create_organisation(s, "Bench University", "university", now)
        accounts.create_user(s, "bencher", now, organisation="Bench University")
        for name in projects:
            accounts.create_project(s, name, "Bench University", now)
            accounts.add_member(s, name, "bencher")
            accounts.create_allocation(s, name, 1_000_000, now - timedelta(minutes=5))
    try:
        t0 = time.monotonic()
        changes = sync_site(ctx.sessions, site.settings, ctx.now(), apply_changes=True, api=api)
        sync_s = time.monotonic() - t0
        log(f"namespace sync: {len(changes)} changes in {sync_s:.1f}s")
        with ctx.sessions() as s:
            caller = caller_for(s, repo.user_by_name(s, "bencher"))
        t0 = time.monotonic()
        for i in range(n_jobs):
            gpus, gpu_type = shape(i)
            form = JobForm(
                project=projects[i % tenants],
                command="python train.py",
                gpus_per_node=gpus,
                gpu_type=gpu_type,
                time_limit_s=3600,
            )
            jobs.submit(ctx, caller, form)
        submit_s = time.monotonic() - t0
        log(f"{n_jobs} jobs submitted to gpucenter in {submit_s:.1f}s")
        watcher = AllRunning(kubeconfig, instance, n_jobs, nodes)
        t0 = time.monotonic()
        passes, first_pass_s = 0, 0.0
        while watcher.at is None:
            began = time.monotonic()
            run_pass(ctx)
            passes += 1
            if passes == 1:
                first_pass_s = time.monotonic() - began
                log(f"first pass (place and create {n_jobs} Jobs): {first_pass_s:.1f}s")
            watcher.check(t0, "gpucenter")
            time.sleep(0.2)
        gpucenter_s = watcher.at - t0
        log(f"gpucenter: all {n_jobs} pods running {gpucenter_s:.1f}s after the first pass")
        return {
            "gpucenter_s": gpucenter_s,
            "gpucenter_first_pass_s": first_pass_s,
            "gpucenter_passes": passes,
            "gpucenter_submit_s": submit_s,
            "gpucenter_sync_s": sync_s,
        }
    finally:
        ctx.dispatcher.shutdown()
        cleanup(api, instance)
        ctx.engine.dispose()


def direct(kubeconfig: str, n_jobs: int, tenants: int, nodes: int) -> dict[str, float]:
    """The same Jobs, in the same layout (a namespace, ClusterQueue and LocalQueue per
    tenant, each with room for all its jobs), created straight at the API server."""
    instance = f"bench-direct-{uuid.uuid4().hex[:6]}"
    api = KubeApi.connect(Path(kubeconfig))
    options = TenancyOptions(instance=instance)
    namespaces = [f"{instance}-t{i:02d}" for i in range(tenants)]
    totals: dict[str, dict[str, int]] = {ns: dict.fromkeys(TYPES, 0) for ns in namespaces}
    for i in range(n_jobs):
        gpus, gpu_type = shape(i)
        totals[namespaces[i % tenants]][gpu_type] += gpus
    state = TenancyState(
        projects={ns: ProjectTenancy(ns, ns, totals[ns]) for ns in namespaces},
        gpu_types=set(TYPES),
    )
    apply(api, plan(state, {}, options))
    job_shape = JobShape(instance=instance, pin_nodes=False)
    manifests = []
    for i in range(n_jobs):
        gpus, gpu_type = shape(i)
        request = LaunchRequest(
            job_id=JobId(i + 1),
            command="python train.py",
            gpu=GpuRequest(gpu_type, gpus),
            placement=(),
            time_limit_s=3600,
            owner=JobOwner("bencher"),
            project_id=ProjectId(1 + i % tenants),
            project=f"t{i % tenants:02d}",
        )
        manifests.append(job_manifest(request, namespaces[i % tenants], job_shape))
    try:
        watcher = AllRunning(kubeconfig, instance, n_jobs, nodes)
        t0 = time.monotonic()
        for manifest in manifests:
            api.create(JOBS.path(manifest["metadata"]["namespace"]), manifest)
        create_s = time.monotonic() - t0
        log(f"direct: {n_jobs} Jobs created in {create_s:.1f}s")
        while watcher.at is None:
            watcher.check(t0, "direct")
            time.sleep(0.5)
        direct_s = watcher.at - t0
        log(f"direct: all {n_jobs} pods running after {direct_s:.1f}s")
        return {"direct_s": direct_s, "direct_create_s": create_s}
    finally:
        cleanup(api, instance)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--restore-nodes", type=int, default=0, help="nodes to leave after")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("GPUCENTER_DATABASE_URL", ""),
        help="a PostgreSQL server to make the run's database on; empty: a SQLite file",
    )
    args = parser.parse_args()
    kubeconfig = setup_site(args.nodes)
    try:
        with tempfile.TemporaryDirectory(prefix="k8s-bench-") as tmp:
            url, made = fresh_database(args.database_url, Path(tmp))
            try:
                ours = through_gpucenter(
                    kubeconfig, args.jobs, args.tenants, args.nodes, Path(tmp), url
                )
            finally:
                if made is not None:
                    drop_database(args.database_url, made)
        theirs = direct(kubeconfig, args.jobs, args.tenants, args.nodes)
    finally:
        if args.restore_nodes:
            setup_site(args.restore_nodes)
    result = {
        "jobs": args.jobs,
        "nodes": args.nodes,
        "tenants": args.tenants,
        "database": make_url(args.database_url or "sqlite://").get_backend_name(),
        **{k: round(v, 2) for k, v in ours.items()},
        **{k: round(v, 2) for k, v in theirs.items()},
        "ratio": round(ours["gpucenter_s"] / theirs["direct_s"], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
