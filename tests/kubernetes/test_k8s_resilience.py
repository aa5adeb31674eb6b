"""Restarts against the real API server: gpucenter restarting adopts its running Jobs and never
creates one twice (also when it died between the API server storing a Job and gpucenter
recording it); the API server restarting mid-run loses and doubles nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from gpucenter.core.model import NodeGpus
from gpucenter.dispatch.base import SiteUnavailable
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import JobRow
from gpucenter.services.identity.signin import caller_for
from gpucenter.services.jobs import manage
from gpucenter.services.scheduling.cycle import recover_after_restart, run_pass
from gpucenter.services.scheduling.launch import launch_requests
from gpucenter.services.wiring import build_context
from tests.kubernetes.conftest import SETUP
from tests.kubernetes.world import KubeWorld, pod_seconds

STATE = Path(os.environ.get("GPUCENTER_K8S_STATE", "/var/lib/gpucenter-k8s"))


def started(row: JobRow) -> bool:
    """Running at the cluster: gpucenter has the pods' start time (no reason left)."""
    return row.state == JobState.RUNNING.value and not row.reason and row.external_id is not None


def ended(row: JobRow) -> bool:
    return JobState(row.state).is_terminal


def one_job_each(w: KubeWorld, job_ids: list[int]) -> None:
    """Exactly one Job in the cluster for each gpucenter job, and one charge."""
    for job_id in job_ids:
        found = w.k8s_jobs(job_id)
        assert len(found) == 1, (job_id, [j["metadata"]["name"] for j in found])
        assert len(w.ledger(job_id)) == 1, (job_id, w.ledger(job_id))


def test_a_restart_adopts_running_jobs_and_creates_none_twice(kube_world: KubeWorld) -> None:
    w = kube_world
    p = w.project("restart", 10, "gcalice")
    w.sync()
    running = [w.submit("gcalice", p, 2, "h100", run_for="12s") for _ in range(3)]
    w.run_all(running, started, 90)
    # One more job: the API server stores its Job, then gpucenter dies before recording it
    # (the row stays PENDING): the submit is made here by hand, as the pass would.
    late = w.submit("gcalice", p, 1, "b200", run_for="4s")
    b200 = next(n.name for n in w.ctx.site.site.nodes if n.gpu_type == "b200")
    with w.ctx.sessions() as s:
        (request,) = launch_requests(s, {JobId(late): (NodeGpus(b200, (0,)),)}).values()
    w.ctx.dispatcher.submit(request)
    assert w.row(late).state == JobState.PENDING.value and len(w.k8s_jobs(late)) == 1

    # The server goes away (its jobs keep running at the cluster) and a new one starts.
    old = w.ctx
    old.dispatcher.detach()
    w.ctx = build_context(old.settings)
    old.engine.dispose()
    assert w.ctx.dispatcher.running_job_ids() == frozenset()
    assert recover_after_restart(w.ctx) == len(running)
    assert w.ctx.dispatcher.running_job_ids() == frozenset(JobId(j) for j in running)

    w.run_all([*running, late], ended, 120)
    for job_id in [*running, late]:
        row = w.row(job_id)
        assert row.state == JobState.COMPLETED.value, (job_id, row.reason_detail)
        assert row.runs == 1
    one_job_each(w, [*running, late])
    (pod,) = w.pods(late)
    assert pod["spec"]["nodeName"] == b200  # the Job made before the crash, adopted


def _apiserver_pid() -> int:
    pid = int((STATE / "run" / "kube-apiserver.pid").read_text())
    recorded = (STATE / "run" / "kube-apiserver.cmdline").read_bytes()
    assert Path(f"/proc/{pid}/cmdline").read_bytes() == recorded, "not setup.sh's API server"
    return pid


def _stop_apiserver() -> None:
    """Stop the kube-apiserver process alone (etcd, controllers, Kueue and KWOK stay up)."""
    pid = _apiserver_pid()
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


def _start_apiserver() -> None:
    """setup.sh starts what is not running (here: the API server) and waits until ready."""
    done = subprocess.run(
        ["bash", str(SETUP)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture
def apiserver_restorer() -> Iterator[None]:
    """Whatever happens in the test, the API server is up again afterwards."""
    try:
        yield
    finally:
        try:
            _apiserver_pid()
        except (OSError, ValueError, AssertionError):
            _start_apiserver()


def test_the_api_server_restarting_mid_run_loses_and_doubles_nothing(
    kube_world: KubeWorld, apiserver_restorer: None
) -> None:
    w = kube_world
    p = w.project("outage", 10, "gcalice")
    w.sync()
    through = w.submit("gcalice", p, 2, "h100", run_for="15s")  # runs across the outage
    stop = w.submit("gcalice", p, 1, "b200", run_for=None)  # cancelled during the outage
    w.run_all([through, stop], started, 90)

    _stop_apiserver()
    try:
        # Passes go on: nothing raises, nothing ends, the jobs say why they are not read.
        for _ in range(3):
            run_pass(w.ctx)
        assert w.ctx.dispatcher.unavailable
        rows = {j: w.row(j) for j in (through, stop)}
        assert all(r.state == JobState.RUNNING.value for r in rows.values())
        assert all(r.reason == "SiteUnavailable" for r in rows.values()), rows
        # A job submitted meanwhile waits; a submit to the site now is refused as
        # unavailable (the job stays queued, no Job is made).
        queued = w.submit("gcalice", p, 1, "h100", run_for="2s")
        with w.ctx.sessions() as s:
            (request,) = launch_requests(
                s, {JobId(queued): (NodeGpus(w.ctx.site.site.nodes[0].name, (0,)),)}
            ).values()
        with pytest.raises(SiteUnavailable):
            w.ctx.dispatcher.submit(request)
        assert JobId(queued) not in w.ctx.dispatcher.running_job_ids()
        with w.ctx.sessions() as s:
            caller = caller_for(s, repo.user_by_name(s, "gcalice"))
        manage.cancel(w.ctx, caller, stop)  # recorded; delivered when the site is back
        run_pass(w.ctx)
        assert w.row(queued).state == JobState.PENDING.value
    finally:
        _start_apiserver()

    w.run_all([through, stop, queued], ended, 180)
    assert w.row(through).state == JobState.COMPLETED.value, w.row(through).reason_detail
    assert w.row(stop).state == JobState.CANCELLED.value, w.row(stop).reason_detail
    assert w.row(queued).state == JobState.COMPLETED.value, w.row(queued).reason_detail
    one_job_each(w, [through, queued])
    assert w.k8s_jobs(stop) == [] and w.pods(stop) == []
    assert len(w.ledger(stop)) == 1
    with w.ctx.sessions() as s:
        assert s.scalar(select(JobRow.runs).where(JobRow.id == through)) == 1
    # The run across the outage is charged its pod's run time x 2 GPUs.
    (pod,) = w.pods(through)
    assert w.ledger(through) == [pytest.approx(pod_seconds(pod) * 2)]
