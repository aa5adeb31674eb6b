"""Two Slurm clusters on this machine as two gpucenter sites (scripts/slurm/setup_second.sh):
cluster A (h100) and cluster B (b200), each with its own slurm.conf, ports and ClusterName,
both accounting into the one slurmdbd. gpucenter is wired from a sites file as in
examples/clusters/sites-two-slurm.yaml; the accounts sync runs per site; every job goes to
the site that has its GPU type, also when that site is full and the other has free GPUs."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gpucenter.config import Settings
from gpucenter.dispatch.broker import SiteBroker
from gpucenter.dispatch.slurm.accounts import (
    SiteState,
    apply_sync,
    plan_sync,
    project_account_name,
    read_actual,
)
from gpucenter.domain.jobs import JobState, WaitReason
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.db import migrate
from gpucenter.persistence.tables import JobRow, SiteRow
from gpucenter.services.context import AppContext
from gpucenter.services.identity import accounts
from gpucenter.services.identity.signin import caller_for
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.scheduling.cycle import run_pass
from gpucenter.services.sites.slurm_settings import SlurmSettings
from gpucenter.services.slurm.sync import sync_site
from gpucenter.services.wiring import build_context, ensure_site
from tests.slurm.conftest import CONF_B, SHARED, slurm, wait_for

CONF_A = "/etc/slurm/slurm.conf"


@dataclass
class TwoClusters:
    ctx: AppContext
    suffix: str
    project: str
    clusters: dict[str, tuple[str, str]]
    """site name -> (Slurm ClusterName, slurm.conf)"""
    top: str = "gpucenter"

    @property
    def account(self) -> str:
        return project_account_name(self.project, self.top)

    def submit(self, gpu_type: str, gpus: int, command: str = "sleep 2") -> int:
        form = JobForm(
            project=self.project,
            command=command,
            gpus_per_node=gpus,
            gpu_type=gpu_type,
            time_limit_s=120,
        )
        with self.ctx.sessions() as s:
            caller = caller_for(s, repo.user_by_name(s, "gcalice"))
        return jobs.submit(self.ctx, caller, form).id

    def row(self, job_id: int) -> JobRow:
        with self.ctx.sessions() as s:
            row = s.get(JobRow, job_id)
            assert row is not None
            s.expunge(row)
            return row

    def site_of(self, job_id: int) -> str:
        with self.ctx.sessions() as s:
            row = s.get_one(JobRow, job_id)
            return s.get_one(SiteRow, row.site_id).name

    def slurm_jobs(self, site: str) -> dict[str, tuple[str, str, str]]:
        """Slurm's record of the project's jobs on one cluster (sacct, asked with that
        cluster's slurm.conf): gpucenter job id -> (Slurm job id, account, AllocTRES)."""
        cluster, conf = self.clusters[site]
        out = slurm(
            *("sacct", "-X", "-n", "-P", "-M", cluster, "-A", self.account),
            *("-S", "now-1hour", "--format=JobID,Account,Comment,AllocTRES,Cluster"),
            conf=conf,
        )
        found: dict[str, tuple[str, str, str]] = {}
        for line in out.splitlines():
            slurm_id, account, comment, tres, on = line.split("|")
            assert on == cluster, line
            found[comment.split(":")[1]] = (slurm_id, account, tres)  # gpucenter:<job>:...
        return found


@pytest.fixture
def two_clusters(slurm_cluster: str, second_cluster: str, tmp_path: Path) -> Iterator[TwoClusters]:
    suffix = uuid.uuid4().hex[:8]
    top = f"gct_{suffix}"
    SHARED.mkdir(mode=0o1777, exist_ok=True)
    clusters = {"alpha": (slurm_cluster, CONF_A), "beta": (second_cluster, CONF_B)}
    sites = []
    for name, (cluster, conf) in clusters.items():
        log_dir = SHARED / suffix / name
        log_dir.mkdir(parents=True)
        log_dir.chmod(0o711)  # root's: gpucenter makes each owner's directory below it
        sites.append(
            f"  - name: {name}\n    kind: slurm\n    slurm:\n      conf: {conf}\n"
            f"      cluster: {cluster}\n      top_account: {top}\n      log_dir: {log_dir}\n"
        )
    sites_file = tmp_path / "sites.yaml"
    sites_file.write_text("sites:\n" + "".join(sites))
    url = f"sqlite:///{tmp_path / 'gpucenter.db'}"
    migrate(url)
    settings = Settings(
        var_dir=tmp_path / "var", database_url=url, sites_file=sites_file, scheduler_interval_s=0.2
    )
    ctx = build_context(settings)
    ensure_site(ctx)
    project = f"p{suffix}"
    now = datetime.now(tz=UTC)
    with ctx.sessions.begin() as s:
        accounts.create_organisation(s, f"Two Sites University {suffix}", "university", now)
        accounts.create_user(s, "gcalice", now, organisation=f"Two Sites University {suffix}")
        accounts.create_project(s, project, f"Two Sites University {suffix}", now)
        accounts.add_member(s, project, "gcalice")
        accounts.create_allocation(s, project, 100.0, now - timedelta(minutes=5))
    world = TwoClusters(ctx, suffix, project, clusters, top)
    try:
        yield world
    finally:
        for rt in ctx.site_runtimes():
            assert isinstance(rt.settings, SlurmSettings)
            cluster, conf = clusters[rt.name]
            subprocess.run(
                ["scancel", "-A", world.account],
                capture_output=True,
                check=False,
                env={"SLURM_CONF": conf, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
            )
            cli = rt.settings.cli()
            apply_sync(
                cli, plan_sync(SiteState(), read_actual(cli, cluster, top), cluster, top), []
            )
            subprocess.run(
                ["sacctmgr", "-i", "delete", "account", f"name={top}", f"cluster={cluster}"],
                capture_output=True,
                check=False,
            )
        ctx.dispatcher.shutdown()
        ctx.engine.dispose()


def test_each_job_lands_on_the_cluster_with_its_gpu_type(two_clusters: TwoClusters) -> None:
    w = two_clusters
    assert isinstance(w.ctx.dispatcher, SiteBroker)
    assert {rt.name: rt.loaded.site.gpu_types for rt in w.ctx.site_runtimes()} == {
        "alpha": {"h100"},
        "beta": {"b200"},
    }
    # The accounts sync runs per site: the project's account exists on both clusters.
    for rt in w.ctx.site_runtimes():
        assert isinstance(rt.settings, SlurmSettings)
        done = sync_site(w.ctx.sessions, rt.settings, w.ctx.now())
        assert done.done and not done.failed, f"{rt.name}: first sync: {done.summary()}"
        cluster = w.clusters[rt.name][0]
        assocs = slurm(
            *("sacctmgr", "-n", "-P", "show", "assoc", f"cluster={cluster}"),
            *(f"account={w.account}", "format=Cluster,Account,User"),
        )
        assert f"{cluster}|{w.account}|gcalice" in assocs.splitlines(), assocs

    # Cluster A has 8 h100, cluster B 4 b200. Three whole-half h100 jobs: two fit on A now,
    # the third waits for A (B has no h100) with A's node as its expected place; two b200
    # jobs run on B at the same time.
    h100 = [w.submit("h100", 4) for _ in range(3)]
    b200 = [w.submit("b200", 2) for _ in range(2)]
    run_pass(w.ctx)
    first = [j for j in h100 if w.row(j).state == JobState.RUNNING.value]
    assert len(first) == 2
    (third,) = set(h100) - set(first)
    waiting = w.row(third)
    assert waiting.state == JobState.PENDING.value
    assert waiting.reason == WaitReason.RESOURCES.value, waiting.reason_detail
    node_a = w.ctx.site_runtimes()[0].loaded.site.nodes[0].name
    assert "expected to start by" in waiting.reason_detail and node_a in waiting.reason_detail
    assert all(w.row(j).state == JobState.RUNNING.value for j in b200)
    # Slurm's own queues, each asked through its cluster's slurm.conf.
    for site, ids in (("alpha", first), ("beta", b200)):
        conf = w.clusters[site][1]
        queued = [
            c.rsplit(":", 2)[0]  # gpucenter:<job> of gpucenter:<job>:<run>:<mac>
            for c in slurm("squeue", "-h", "-A", w.account, "-o", "%k", conf=conf).split()
        ]
        assert sorted(queued) == sorted(f"gpucenter:{j}" for j in ids), (site, queued)

    def all_ended() -> bool:
        run_pass(w.ctx)
        return all(JobState(w.row(j).state).is_terminal for j in h100 + b200)

    wait_for("all five jobs end", all_ended, 300)
    assert {j: w.row(j).state for j in h100 + b200} == {
        j: JobState.COMPLETED.value for j in h100 + b200
    }
    assert {w.site_of(j) for j in h100} == {"alpha"}
    assert {w.site_of(j) for j in b200} == {"beta"}

    # sacct on each cluster: every job there, under the project's account, with its GPU type,
    # and none of them on the other cluster.
    def recorded() -> bool:
        return len(w.slurm_jobs("alpha")) == 3 and len(w.slurm_jobs("beta")) == 2

    wait_for("slurmdbd has every job", recorded, 120)
    for site, ids, gpu_type, gpus in (("alpha", h100, "h100", 4), ("beta", b200, "b200", 2)):
        seen = w.slurm_jobs(site)
        assert sorted(seen) == sorted(str(j) for j in ids), (site, seen)
        for job_id in ids:
            slurm_id, account, tres = seen[str(job_id)]
            assert slurm_id == w.row(job_id).external_id
            assert account == w.account
            assert f"gres/gpu:{gpu_type}={gpus}" in tres, tres
