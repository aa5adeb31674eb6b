"""One gpucenter over three kinds of site, each real: a lab machine running jobs as local
processes (virtual l4 GPUs), the Slurm test cluster (8 h100 on one node, real slurmctld and
slurmd) and the Kubernetes test site (h100 and b200 nodes behind a real API server). Wired
from one sites file; one view of all their nodes; every job goes to a site that has its GPU
type, the one where it can start first, and a container image only where it can run."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from gpucenter.dispatch.base import SiteKind
from gpucenter.dispatch.broker import SiteBroker
from gpucenter.dispatch.slurm.accounts import SiteState, apply_sync, plan_sync, read_actual
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.jobs import JobState, WaitReason
from gpucenter.persistence.tables import JobRow, SiteRow
from gpucenter.services.scheduling.cycle import run_pass
from gpucenter.services.sites.slurm_settings import SlurmSettings
from gpucenter.services.slurm.sync import sync_site as sync_slurm
from tests.kubernetes.world import KubeWorld, make_world, wait_for
from tests.slurm.conftest import SHARED, slurm_cluster  # noqa: F401 (a fixture)

LAB = """site: lab
nodes:
  - {name: lab-n1, gpus: 4, gpu_type: l4, block: lab}
"""


@pytest.fixture
def three_sites(k8s_kubeconfig: str, slurm_cluster: str, tmp_path: Path) -> Iterator[KubeWorld]:  # noqa: F811
    instance = f"gct{uuid.uuid4().hex[:8]}"
    top = f"gct_{instance[3:]}"
    log_dir = SHARED / instance
    log_dir.mkdir(parents=True)
    log_dir.chmod(0o711)  # root's: gpucenter makes each owner's directory below it
    (tmp_path / "lab.yaml").write_text(LAB)
    extra = (
        f"  - name: alpha\n    kind: slurm\n    slurm:\n      conf: /etc/slurm/slurm.conf\n"
        f"      cluster: {slurm_cluster}\n      top_account: {top}\n      log_dir: {log_dir}\n"
        "  - name: lab\n    kind: local\n    site_file: lab.yaml\n"
    )
    world = make_world(k8s_kubeconfig, tmp_path, instance, extra)
    try:
        yield world
    finally:
        world.ctx.dispatcher.shutdown()
        world.cleanup()
        for rt in world.ctx.site_runtimes():
            if isinstance(rt.settings, SlurmSettings):
                subprocess.run(["scancel", "-A", f"fleet-{instance}"], capture_output=True)
                cli = rt.settings.cli()
                actual = read_actual(cli, slurm_cluster, top)
                apply_sync(cli, plan_sync(SiteState(), actual, slurm_cluster, top))
                subprocess.run(
                    ["sacctmgr", "-i", "delete", "account", f"name={top}"], capture_output=True
                )
        world.ctx.engine.dispose()


def site_of(w: KubeWorld, job_id: int) -> str:
    with w.ctx.sessions() as s:
        row = s.get_one(JobRow, job_id)
        return s.get_one(SiteRow, row.site_id).name


def test_jobs_are_brokered_by_gpu_type_and_earliest_start_over_three_kinds(
    three_sites: KubeWorld,
) -> None:
    w = three_sites
    assert isinstance(w.ctx.dispatcher, SiteBroker)
    kinds = {rt.name: rt.kind for rt in w.ctx.site_runtimes()}
    assert kinds == {"kube": SiteKind.KUBERNETES, "alpha": SiteKind.SLURM, "lab": SiteKind.LOCAL}
    with w.ctx.sessions() as s:
        assert {r.name: r.kind for r in s.scalars(select(SiteRow))} == {
            "kube": "kubernetes",
            "alpha": "slurm",
            "lab": "local",
        }
    # One view: every site's nodes in the one snapshot the core schedules.
    by_site = {rt.name: {n.name for n in rt.loaded.site.nodes} for rt in w.ctx.site_runtimes()}
    assert {n.name for n in w.ctx.site.site.nodes} == set().union(*by_site.values())
    assert {n.gpu_type for n in w.ctx.site.site.nodes} == {"h100", "b200", "l4"}

    p = w.project("fleet", 50, "gcalice")
    w.sync()
    (alpha,) = [rt for rt in w.ctx.site_runtimes() if rt.name == "alpha"]
    assert isinstance(alpha.settings, SlurmSettings)
    synced = sync_slurm(w.ctx.sessions, alpha.settings, w.ctx.now(), site="alpha")
    assert not synced.failed and not synced.problems, synced.summary()

    def job(gpu_type: str, gpus: int, seconds: int, **kw: object) -> int:
        return w.submit(
            "gcalice",
            p,
            gpus,
            gpu_type,
            run_for=f"{seconds}s",
            command=f"sleep {seconds}",
            time_limit_s=120,
            **kw,  # type: ignore[arg-type]
        )

    # 40 h100 GPUs asked for at once: Kubernetes has 32, Slurm 8; all start now, on both.
    h100 = [job("h100", 8, 6) for _ in range(5)]
    b200 = job("b200", 4, 3)
    l4 = job("l4", 2, 2)
    run_pass(w.ctx)
    # slurmctld learns a new association from slurmdbd a moment after the sync: a job it
    # refuses meanwhile waits (SiteNotReady) and is tried again, so passes go on until then.
    for rt in w.ctx.site_runtimes():
        rt.not_ready.clear()

    def all_running() -> bool:
        run_pass(w.ctx)
        for rt in w.ctx.site_runtimes():
            rt.not_ready.clear()
        return all(w.row(j).state == JobState.RUNNING.value for j in [*h100, b200, l4])

    wait_for("every job running", all_running, 90)
    for job_id in [*h100, b200, l4]:
        assert w.row(job_id).state == JobState.RUNNING.value, w.row(job_id).reason_detail
    assert sorted(site_of(w, j) for j in h100) == ["alpha", "kube", "kube", "kube", "kube"]
    assert site_of(w, b200) == "kube" and site_of(w, l4) == "lab"
    # A sixth waits for the first h100 GPUs to free up, on whichever site that is.
    sixth = job("h100", 8, 2)
    run_pass(w.ctx)
    waiting = w.row(sixth)
    assert waiting.state == JobState.PENDING.value
    assert waiting.reason == WaitReason.RESOURCES.value and "expected to start by" in (
        waiting.reason_detail
    ), waiting.reason_detail

    # Images: only on Kubernetes, and only for GPU types no other site has.
    boxed = job("b200", 1, 2, image="registry.invalid/team/train:3")
    with pytest.raises(ValidationError, match="also on site\\(s\\) 'alpha'"):
        job("h100", 1, 2, image="registry.invalid/team/train:3")
    with pytest.raises(ValidationError, match="'lab'"):
        job("l4", 1, 2, image="registry.invalid/team/train:3")

    w.run_all([*h100, b200, l4, sixth, boxed], lambda r: JobState(r.state).is_terminal, 180)
    for job_id in [*h100, b200, l4, sixth, boxed]:
        row = w.row(job_id)
        assert row.state == JobState.COMPLETED.value, (job_id, row.reason_detail)
    assert site_of(w, boxed) == "kube"
    (pod,) = w.pods(boxed)
    assert pod["spec"]["containers"][0]["image"] == "registry.invalid/team/train:3"
    # Each job ran once, where it was recorded: Slurm's by its Slurm id, Kubernetes' by Job.
    slurm_job = next(j for j in h100 if site_of(w, j) == "alpha")
    assert w.row(slurm_job).external_id.isdigit()
    assert all(len(w.k8s_jobs(j)) == 1 for j in h100 if site_of(w, j) == "kube")
