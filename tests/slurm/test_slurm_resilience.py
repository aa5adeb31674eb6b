"""Faults against the real daemons: slurmctld killed during a run, and a gpucenter restart
(including a crash between sbatch and the database commit). Nothing lost, nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from gpucenter.core.model import NodeGpus
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState, WaitReason
from gpucenter.services.context import AppContext
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.scheduling.cycle import recover_after_restart, run_pass
from gpucenter.services.scheduling.launch import launch_requests
from gpucenter.services.wiring import make_slurm_dispatcher
from tests.slurm.conftest import SETUP, SlurmWorld, job_row, project, run_until, slurm, wait_for


def _form(name: str, seconds: int) -> JobForm:
    return JobForm(
        project=name,
        command=f"sleep {seconds}",
        gpus_per_node=1,
        gpu_type="h100",
        time_limit_s=300,
    )


def _slurm_jobs_of(account: str) -> list[str]:
    """The comments of every Slurm job of the account, live or ended: one per submission."""
    out = slurm("sacct", "-X", "-n", "-P", "-a", "-A", account, "-S", "now-1hour", "-o", "Comment")
    # "gpucenter:<job>" of each marker "gpucenter:<job>:<run>:<mac>"
    return sorted(line.rsplit(":", 2)[0] for line in out.splitlines() if line)


def _controller_up() -> bool:
    return subprocess.run(["scontrol", "ping"], capture_output=True, check=False).returncode == 0


def _passed(world: SlurmWorld) -> bool:
    run_pass(world.ctx)
    return True


def _slurm_running(external_id: str) -> bool:
    return slurm("squeue", "-h", "-j", external_id, "-o", "%T").strip() == "RUNNING"


def test_slurmctld_killed_during_a_run(slurm_world: SlurmWorld) -> None:
    world = slurm_world
    name = project(world, "k", 100.0, "gcalice")
    world.sync()
    alice = world.caller("gcalice")
    first = jobs.submit(world.ctx, alice, _form(name, 25)).id
    row = run_until(world, first, lambda r: bool(r.external_id), timeout=120)
    assert row.external_id
    running = row.external_id
    # Slurm holds a job until gpucenter recorded its start: the next pass releases it.
    wait_for("Slurm runs the first job", lambda: _passed(world) and _slurm_running(running), 120)

    try:
        with open("/run/slurmctld.pid") as pid_file:
            os.kill(int(pid_file.read().strip()), signal.SIGTERM)
        wait_for("slurmctld gone", lambda: not _controller_up(), 60)
        second = jobs.submit(world.ctx, alice, _form(name, 1)).id

        run_pass(world.ctx)  # squeue cannot reach the controller: the site backs off
        health = world.ctx.site_health
        assert health.failures >= 1 and health.blocked(world.ctx.now())
        queued, started = job_row(world, second), job_row(world, first)
        assert queued.state == JobState.PENDING.value and queued.external_id is None
        assert queued.reason == WaitReason.SITE_UNAVAILABLE.value
        assert "unavailable" in queued.reason_detail and "slurm controller" in queued.reason_detail
        assert started.state == JobState.RUNNING.value and started.external_id == running
        assert started.reason == "SiteUnavailable", started.reason
        run_pass(world.ctx)  # while it backs off, nothing is submitted and nothing is lost
        assert job_row(world, second).external_id is None
    finally:
        # Always bring slurmctld back (and its node), whatever failed above: the next tests
        # need it. setup.sh waits for readiness with a generous ceiling.
        restart = subprocess.run(
            ["bash", str(SETUP)], capture_output=True, text=True, timeout=900, check=False
        )
    assert restart.returncode == 0, restart.stderr  # slurmctld and slurmd back (see notes)
    wait_for("slurmctld answers again", _controller_up, 300)

    done = run_until(world, first, lambda r: JobState(r.state).is_terminal, timeout=300)
    assert done.state == JobState.COMPLETED.value, done.reason_detail
    assert done.external_id == running
    then = run_until(world, second, lambda r: JobState(r.state).is_terminal, timeout=300)
    assert then.state == JobState.COMPLETED.value, then.reason_detail
    assert world.ctx.site_health.failures == 0
    account = world.account(name)
    wait_for("sacct has both", lambda: len(_slurm_jobs_of(account)) == 2, 120)
    assert _slurm_jobs_of(account) == sorted([f"gpucenter:{first}", f"gpucenter:{second}"])


def test_restart_readopts_and_never_submits_twice(slurm_world: SlurmWorld) -> None:
    world = slurm_world
    name = project(world, "r", 100.0, "gcalice")
    world.sync()
    alice = world.caller("gcalice")
    running = jobs.submit(world.ctx, alice, _form(name, 6)).id
    row = run_until(world, running, lambda r: bool(r.external_id), timeout=120)
    assert row.external_id
    # A crash between sbatch and the database commit: Slurm has the job, the row is PENDING.
    crashed = jobs.submit(world.ctx, alice, _form(name, 2)).id
    node = world.ctx.site.site.nodes[0].name
    with world.ctx.sessions() as s:
        requests = launch_requests(s, {JobId(crashed): (NodeGpus(node, (0,)),)})
    world.dispatcher.submit(requests[JobId(crashed)])
    assert job_row(world, crashed).external_id is None

    # gpucenter restarts: a new dispatcher (it knows no job), same database and Slurm.
    world.dispatcher.detach()
    fresh = make_slurm_dispatcher(world.ctx.sessions, world.settings, world.ctx.clock)
    ctx = AppContext(
        world.ctx.settings,
        world.ctx.engine,
        world.ctx.sessions,
        world.ctx.site,
        fresh,
        world.ctx.clock,
    )
    assert recover_after_restart(ctx) == 1  # the job the database says runs
    assert fresh.running_job_ids() == {JobId(running)}
    world.ctx = ctx
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        run_pass(ctx)
        states = [JobState(job_row(world, j).state) for j in (running, crashed)]
        if all(s.is_terminal for s in states):
            break
        time.sleep(0.3)
    first, second = job_row(world, running), job_row(world, crashed)
    assert first.state == JobState.COMPLETED.value, first.reason_detail
    assert first.external_id == row.external_id
    assert second.state == JobState.COMPLETED.value, second.reason_detail
    # The crashed job's Slurm job was adopted, not submitted again: one Slurm job each.
    account = world.account(name)
    wait_for("sacct has both", lambda: len(_slurm_jobs_of(account)) >= 2, 120)
    assert _slurm_jobs_of(account) == sorted([f"gpucenter:{running}", f"gpucenter:{crashed}"])
