"""A gpucenter wired to the real Kubernetes test site, for the acceptance tests.

`KubeWorld` is what a test drives: gpucenter built by `build_context` from a sites file with
one Kubernetes site (as an operator would write it), its own SQLite database, and its own
instance label, namespace prefix and projects (``gct<hex>-...``), so that tests never see
each other's namespaces, queues or Jobs. The admin client (`admin`) is the test's own view
of the cluster: what it asserts on is read from the API server, never from gpucenter.

Jobs "run" on KWOK's fake nodes: the site passes the job's ``FAKE_DURATION`` and
``FAKE_EXIT_CODE`` env variables to the pod annotations KWOK's stages read
(``annotations_from_env``), so a job ends after that long with that exit code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from gpucenter.config import Settings
from gpucenter.dispatch.kubernetes.api import (
    CLUSTER_QUEUES,
    FLAVORS,
    JOBS,
    NAMESPACES,
    PODS,
    KubeApi,
    KubernetesError,
)
from gpucenter.dispatch.kubernetes.manifests import LABEL_INSTANCE, LABEL_JOB
from gpucenter.dispatch.kubernetes.states import parse_time
from gpucenter.dispatch.kubernetes.tenancy import Change
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.db import migrate
from gpucenter.persistence.tables import AllocationRow, JobRow, LedgerEntryRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import accounts
from gpucenter.services.identity.signin import caller_for
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.kubernetes.settings import KubernetesSettings
from gpucenter.services.kubernetes.sync import sync_site
from gpucenter.services.scheduling.cycle import run_pass
from gpucenter.services.wiring import build_context, ensure_site

Json = dict[str, Any]
FAKE_ENV = {
    "FAKE_DURATION": "gpucenter.io/fake-duration",
    "FAKE_EXIT_CODE": "gpucenter.io/fake-exit-code",
}
USERS = ("gcalice", "gcbob")


def sites_yaml(kubeconfig: str, instance: str, log_dir: Path, name: str = "kube") -> str:
    """A sites file entry for the test site, as an operator would write it."""
    env = "".join(f"\n        {k}: {v}" for k, v in FAKE_ENV.items())
    return (
        f"  - name: {name}\n    kind: kubernetes\n    kubernetes:\n"
        f"      kubeconfig: {kubeconfig}\n      instance: {instance}\n"
        f"      namespace_prefix: {instance}-\n      log_dir: {log_dir}\n"
        f"      annotations_from_env:{env}\n"
    )


@dataclass
class KubeWorld:
    ctx: AppContext
    admin: KubeApi
    instance: str
    tmp: Path
    kubeconfig: str

    # ------------------------------------------------------------------ gpucenter side
    @property
    def settings(self) -> KubernetesSettings:
        (site,) = [rt for rt in self.ctx.site_runtimes() if rt.name == "kube"]  # the test site
        assert isinstance(site.settings, KubernetesSettings)
        return site.settings

    def project(
        self,
        name: str,
        gpu_hours: float,
        *members: str,
        gpu_type: str | None = None,
        max_gpus: int | None = None,
    ) -> str:
        """A project of the test (its name carries the test's suffix) with one allocation."""
        project = f"{name}-{self.instance}"
        now = datetime.now(tz=UTC)
        with self.ctx.sessions.begin() as s:
            accounts.create_project(s, project, f"Org {self.instance}", now)
            for member in members:
                accounts.add_member(s, project, member)
            alloc = accounts.create_allocation(s, project, gpu_hours, now - timedelta(minutes=5))
            alloc.gpu_type = gpu_type
            alloc.max_concurrent_gpus = max_gpus
        return project

    def namespace(self, project: str) -> str:
        return f"{self.instance}-{project}"

    def submit(
        self,
        user: str,
        project: str,
        gpus: int,
        gpu_type: str = "h100",
        *,
        nodes: int = 1,
        run_for: str | None = "3s",
        exit_code: int | None = None,
        time_limit_s: int = 300,
        image: str | None = None,
        command: str = "python train.py",
    ) -> int:
        env = {}
        if run_for is not None:
            env["FAKE_DURATION"] = run_for
        if exit_code is not None:
            env["FAKE_EXIT_CODE"] = str(exit_code)
        form = JobForm(
            project=project,
            command=command,
            gpus_per_node=gpus,
            nodes=nodes,
            gpu_type=gpu_type,
            time_limit_s=time_limit_s,
            env=env,
            image=image,
        )
        with self.ctx.sessions() as s:
            caller = caller_for(s, repo.user_by_name(s, user))
        return jobs.submit(self.ctx, caller, form).id

    def row(self, job_id: int) -> JobRow:
        with self.ctx.sessions() as s:
            row = s.get(JobRow, job_id)
            assert row is not None
            s.expunge(row)
            return row

    def run_until(
        self, job_id: int, done: Callable[[JobRow], bool], timeout: float = 90.0
    ) -> JobRow:
        """Scheduling passes until `done` holds for the job's row; that row."""

        def check() -> bool:
            run_pass(self.ctx)
            return done(self.row(job_id))

        wait_for(f"job {job_id}", check, timeout)
        return self.row(job_id)

    def run_all(
        self, job_ids: Sequence[int], done: Callable[[JobRow], bool], timeout: float = 120.0
    ) -> None:
        def check() -> bool:
            run_pass(self.ctx)
            return all(done(self.row(j)) for j in job_ids)

        wait_for(f"jobs {list(job_ids)}", check, timeout)

    def ledger(self, job_id: int) -> list[float]:
        with self.ctx.sessions() as s:
            rows = s.scalars(select(LedgerEntryRow).where(LedgerEntryRow.job_id == job_id))
            return [r.gpu_seconds for r in rows]

    def charge(self, project: str, gpu_seconds: float, source: str) -> None:
        """A ledger entry on the project's allocation (usage from elsewhere, or a credit),
        and the allocation states refreshed as the scheduler leader does."""
        from gpucenter.services.programmes.awards import refresh_allocation_states

        now = datetime.now(tz=UTC)
        with self.ctx.sessions.begin() as s:
            alloc = s.scalars(
                select(AllocationRow).where(
                    AllocationRow.project_id == repo.project_by_name(s, project).id
                )
            ).one()
            s.add(
                LedgerEntryRow(
                    allocation_id=alloc.id,
                    source=source,
                    gpu_type=alloc.gpu_type or "h100",
                    gpu_seconds=gpu_seconds,
                    created_at=now,
                )
            )
            s.flush()
            refresh_allocation_states(s, now)

    def sync(self, apply: bool = True) -> list[Change]:
        return sync_site(self.ctx.sessions, self.settings, self.ctx.now(), apply_changes=apply)

    # ----------------------------------------------------------------- the cluster's side
    def k8s_jobs(self, job_id: int) -> list[Json]:
        """Every Job in the cluster carrying the gpucenter job's id (of this instance)."""
        selector = f"{LABEL_INSTANCE}={self.instance},{LABEL_JOB}={job_id}"
        return self.admin.list(JOBS.path(), selector)

    def pods(self, job_id: int) -> list[Json]:
        selector = f"{LABEL_INSTANCE}={self.instance},{LABEL_JOB}={job_id}"
        return self.admin.list(PODS.path(), selector)

    def node_labels(self, node: str) -> dict[str, str]:
        return dict(self.admin.get(f"/api/v1/nodes/{node}")["metadata"]["labels"])

    def can(self, user: str, verb: str, resource: str, namespace: str, group: str = "") -> bool:
        """Whether the cluster lets `user` do `verb` on `resource` in `namespace` (asked
        with a SubjectAccessReview, as the API server's own authoriser answers it)."""
        review = self.admin.create(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "resourceAttributes": {
                        "namespace": namespace,
                        "verb": verb,
                        "resource": resource,
                        "group": group,
                    },
                },
            },
        )
        return bool(review["status"].get("allowed"))

    def cleanup(self) -> None:
        """Remove everything of this instance from the cluster (namespaces with their Jobs
        and pods, cluster queues, flavors); nothing is waited for."""
        selector = f"{LABEL_INSTANCE}={self.instance}"
        for kind in (NAMESPACES, CLUSTER_QUEUES, FLAVORS):
            try:
                for obj in self.admin.list(kind.path(), selector):
                    self.admin.delete(kind.path(None, obj["metadata"]["name"]), "Background")
            except KubernetesError:
                pass


def pod_seconds(pod: Json) -> float:
    """How long a one-container pod ran, by the cluster's own clock (its start, its end)."""
    (status,) = pod["status"]["containerStatuses"]
    end = parse_time(status["state"]["terminated"]["finishedAt"])
    start = parse_time(pod["status"]["startTime"])
    assert start is not None and end is not None
    return end - start


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout} s")


def make_world(
    kubeconfig: str,
    tmp: Path,
    instance: str,
    extra_sites: str = "",
    admin_kubeconfig: str | None = None,
) -> KubeWorld:
    """gpucenter from a sites file with the test site (and `extra_sites` entries), reaching
    it with `kubeconfig`; the test's own client uses `admin_kubeconfig` (default: the same)."""
    log_dir = tmp / "k8s-logs"
    sites = tmp / "sites.yaml"
    sites.write_text("sites:\n" + sites_yaml(kubeconfig, instance, log_dir) + extra_sites)
    url = f"sqlite:///{tmp / 'gpucenter.db'}"
    migrate(url)
    settings = Settings(
        var_dir=tmp / "var", database_url=url, sites_file=sites, scheduler_interval_s=0.2
    )
    ctx = build_context(settings)
    ensure_site(ctx)
    now = datetime.now(tz=UTC)
    with ctx.sessions.begin() as s:
        accounts.create_organisation(s, f"Org {instance}", "university", now)
        for name in USERS:
            accounts.create_user(s, name, now, organisation=f"Org {instance}")
    admin = KubeApi.connect(Path(admin_kubeconfig or kubeconfig))
    return KubeWorld(ctx, admin, instance, tmp, kubeconfig)
