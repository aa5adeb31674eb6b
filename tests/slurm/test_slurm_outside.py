"""Issue 17 on a real Slurm site: the per-run marker and submissions outside gpucenter.

A member of a project is in the project's Slurm account (gpucenter submits their jobs there
as them), so they can ``sbatch -A`` it themselves and copy the marker of a job of theirs
(``squeue`` shows it to them). Against the real daemons (scripts/slurm/setup.sh, with the
site's submit rule ``job_submit.lua``):

- a Slurm job of the owner's own carrying a copied, forged or old-run marker is never adopted
  as the gpucenter job, after a crash between sbatch and the database's record;
- ``outside_submissions: refuse``: the project's setup (the sync) installs the rule for its
  namespace and a direct ``sbatch -A`` (or a default account) is refused at the cluster,
  while gpucenter's own jobs run;
- ``outside_submissions: flag``: such a job runs, and the usage ingest charges it to the
  project once and flags it (usage_flags, an audit entry, a notification to the PI).
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from gpucenter.core.model import NodeGpus
from gpucenter.dispatch.slurm import submit_rule
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState
from gpucenter.persistence.tables import LedgerEntryRow
from gpucenter.persistence.tables_accounting import NotificationRow
from gpucenter.persistence.tables_audit import AuditEntryRow
from gpucenter.persistence.tables_ops import UsageFlagRow
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.scheduling.launch import launch_requests
from gpucenter.services.slurm.ingest import OUTSIDE_JOB, ingest_site
from gpucenter.services.slurm.sync import sync_site
from gpucenter.services.wiring import make_slurm_dispatcher
from tests.slurm.conftest import SlurmWorld, project, run_until, slurm, wait_for

pytestmark = pytest.mark.slurm

CONF_DIR = Path("/etc/slurm")


@pytest.fixture
def world(slurm_world: SlurmWorld) -> Iterator[SlurmWorld]:
    """The Slurm world; its namespace's refuse mark is removed again at the end."""
    try:
        yield slurm_world
    finally:
        (Path(submit_rule.REFUSE_DIR) / slurm_world.top.lower()).unlink(missing_ok=True)


def _setup(world: SlurmWorld, mode: str) -> str:
    """A project of gcalice's at a site with ``outside_submissions: <mode>``, set up by the
    sync as the leader runs it (accounts, and the submit rule where the server runs on the
    controller's host)."""
    world.settings = world.settings.model_copy(
        update={"outside_submissions": mode, "submit_rule_dir": CONF_DIR}
    )
    name = project(world, "o", 100.0, "gcalice")
    outcome = sync_site(world.ctx.sessions, world.settings, world.ctx.now(), site="slurm")
    assert not outcome.failed, outcome.failed
    assert submit_rule.refusing(world.top) is (mode == "refuse")
    return name


def _sbatch_as(user: str, *args: str) -> subprocess.CompletedProcess[str]:
    """sbatch run by the user themselves (not through gpucenter)."""
    return subprocess.run(
        [
            *("runuser", "-u", user, "--", "sbatch", "--parsable"),
            *("--gres=gpu:h100:1", "--time=1", "--chdir=/tmp", "--output=/dev/null"),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def _job_id(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    ext = done.stdout.strip().split(";")[0]
    assert ext.isdigit(), done.stdout
    return ext


def test_a_copied_forged_or_old_run_marker_on_the_owners_own_job_is_never_adopted(
    world: SlurmWorld,
) -> None:
    name = _setup(world, "flag")  # so that gcalice may sbatch to the account herself
    account = world.account(name)
    form = JobForm(
        project=name, command="sleep 1", gpus_per_node=1, gpu_type="h100", time_limit_s=60
    )
    job = jobs.submit(world.ctx, world.caller("gcalice"), form).id
    # A crash between sbatch and the database's record: Slurm has the job (held until
    # recorded), the row is still PENDING.
    node = world.ctx.site.site.nodes[0].name
    with world.ctx.sessions() as s:
        request = launch_requests(s, {JobId(job): (NodeGpus(node, (0,)),)})[JobId(job)]
    ours = world.dispatcher.submit(request).external_id
    # gcalice reads the marker of her job from squeue, as any owner can, and submits her own
    # jobs under the project's account: one with the copied marker, one with a forged MAC,
    # one with a marker she cannot have seen (the next run's is not computable without the
    # key, so she writes the run number and a random MAC).
    marker = slurm("squeue", "-h", "-j", ours, "-o", "%k").strip()
    assert marker == world.settings.marker_key().marker(job, request.run)
    head = marker.rsplit(":", 1)[0]
    forged = f"{head}:{secrets.token_hex(12)}"
    copies = {
        "copy": _job_id(
            _sbatch_as(
                "gcalice", f"-A{account}", f"--comment={marker}", "--hold", "--wrap", "sleep 300"
            )
        ),
        "forged": _job_id(
            _sbatch_as(
                "gcalice", f"-A{account}", f"--comment={forged}", "--hold", "--wrap", "sleep 300"
            )
        ),
    }
    for ext in copies.values():
        user = slurm("squeue", "-h", "-j", ext, "-o", "%u|%a|%k").strip()
        assert user.startswith(f"gcalice|{account}|gpucenter:{job}:"), user

    # gpucenter restarts: a new dispatcher with the same key, and the start is tried again.
    world.dispatcher.detach()
    fresh = make_slurm_dispatcher(world.ctx.sessions, world.settings, world.ctx.clock)
    fresh.poll()
    assert fresh.submit(request).external_id == ours  # the earliest valid one: gpucenter's
    refused = fresh.refused_adoptions
    assert "submitted before it" in refused[copies["copy"]], refused
    assert "no valid marker" in refused[copies["forged"]], refused

    # The next run (a requeue) finds only run 1's markers: none is adopted, a new Slurm job
    # is submitted for run 2.
    fresh.detach()
    later = make_slurm_dispatcher(world.ctx.sessions, world.settings, world.ctx.clock)
    later.poll()
    second = later.submit(replace(request, run=request.run + 1)).external_id
    assert second not in (ours, *copies.values())
    refused = later.refused_adoptions
    assert f"run {request.run}, not of run {request.run + 1}" in refused[ours], refused
    assert f"run {request.run}, not of run {request.run + 1}" in refused[copies["copy"]]
    assert slurm("squeue", "-h", "-j", second, "-o", "%k").strip() == (
        world.settings.marker_key().marker(job, request.run + 1)
    )
    later.detach()
    for ext in (ours, second, *copies.values()):
        subprocess.run(["scancel", ext], capture_output=True, check=False)


def test_refuse_an_outside_submission_is_refused_at_sbatch(world: SlurmWorld) -> None:
    name = _setup(world, "refuse")
    account = world.account(name)
    direct = _sbatch_as("gcalice", f"--account={account}", "--wrap", "true")
    assert direct.returncode != 0
    assert "gpucenter project account" in direct.stderr, direct.stderr
    upper = _sbatch_as("gcalice", f"--account={account.upper()}", "--wrap", "true")
    assert upper.returncode != 0, upper.stdout  # Slurm's names know no case; nor does the rule
    # A job submitted through gpucenter (sbatch by root, --uid) runs as before.
    form = JobForm(
        project=name, command="echo ok", gpus_per_node=1, gpu_type="h100", time_limit_s=60
    )
    job = jobs.submit(world.ctx, world.caller("gcalice"), form).id
    row = run_until(world, job, lambda r: JobState(r.state).is_terminal)
    assert row.state == JobState.COMPLETED.value, row.reason_detail
    out = slurm("squeue", "-h", "-A", account, "-u", "gcalice", "-o", "%i")
    assert out.strip() == ""  # nothing of hers runs there but gpucenter's (ended)


def test_flag_an_outside_submission_is_charged_once_and_flagged(world: SlurmWorld) -> None:
    name = _setup(world, "flag")
    account = world.account(name)
    with world.ctx.fenced() as s:  # the cursor starts before the jobs
        ingest_site(
            s,
            world.settings.cli(),
            world.cluster,
            world.top,
            world.ctx.now(),
            marker_key=world.settings.marker_key(),
        )
    direct = _job_id(_sbatch_as("gcalice", f"--account={account}", "--wrap", "sleep 2"))

    def ended() -> bool:
        out = slurm("sacct", "-X", "-n", "-P", "-j", direct, "--format=State,ElapsedRaw")
        return out.startswith("COMPLETED|")

    wait_for("the direct job ended in sacct", ended, 120)
    elapsed = int(slurm("sacct", "-X", "-n", "-P", "-j", direct, "--format=ElapsedRaw"))
    source = f"slurm:{world.cluster}:{direct}"

    def ingest() -> list[str]:
        with world.ctx.fenced() as s:
            report = ingest_site(
                s,
                world.settings.cli(),
                world.cluster,
                world.top,
                world.ctx.now() + timedelta(seconds=1),
                marker_key=world.settings.marker_key(),
            )
        return report.flagged

    flagged: list[str] = []
    wait_for("the ingest flags it", lambda: bool(flagged.extend(ingest()) or flagged), 60)
    assert flagged == [direct]
    with world.ctx.sessions() as s:
        charges = s.scalars(select(LedgerEntryRow).where(LedgerEntryRow.source == source)).all()
        flag = s.scalars(select(UsageFlagRow).where(UsageFlagRow.source == source)).one()
        audit = s.scalars(select(AuditEntryRow).where(AuditEntryRow.action == OUTSIDE_JOB)).all()
        alice = world.caller("gcalice").user_id
        told = s.scalars(
            select(NotificationRow).where(
                NotificationRow.user_id == alice, NotificationRow.kind == "slurm_outside_job"
            )
        ).all()
    assert [c.gpu_seconds for c in charges] == [float(elapsed)]  # 1 GPU x ElapsedRaw
    assert flag.username == "gcalice" and flag.account == account and "charged" in flag.reason
    assert len(audit) == 1 and audit[0].details["slurm_job"] == source
    assert len(told) == 1 and direct in told[0].subject
    assert ingest() == []  # a re-read charges and flags nothing again
    with world.ctx.sessions() as s:
        assert (
            len(s.scalars(select(LedgerEntryRow).where(LedgerEntryRow.source == source)).all()) == 1
        )


def test_after_a_restart_a_row_naming_a_users_own_slurm_job_is_not_adopted(
    world: SlurmWorld,
) -> None:
    """The database names a Slurm job for a running job (an edited or restored row), but that
    Slurm job is the owner's own, without the job's marker: the restarted server does not
    adopt it (the job ends, saying so) and leaves the Slurm job alone."""
    from gpucenter.persistence.tables import JobRow
    from gpucenter.services.context import AppContext
    from gpucenter.services.scheduling.cycle import recover_after_restart

    name = _setup(world, "flag")
    account = world.account(name)
    form = JobForm(
        project=name, command="sleep 120", gpus_per_node=1, gpu_type="h100", time_limit_s=180
    )
    job = jobs.submit(world.ctx, world.caller("gcalice"), form).id
    row = run_until(world, job, lambda r: bool(r.external_id) and r.started_at is not None)
    hers = _job_id(
        _sbatch_as("gcalice", f"-A{account}", f"--comment=gpucenter:{job}", "--wrap", "sleep 300")
    )
    with world.ctx.sessions.begin() as s:
        s.get_one(JobRow, job).external_id = hers  # the row now names her job
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
    assert recover_after_restart(ctx) == 1
    assert JobId(job) not in fresh.running_job_ids()
    assert "no valid marker" in fresh.refused_adoptions[hers]
    after = run_until(world, job, lambda r: JobState(r.state).is_terminal)
    assert after.state == JobState.FAILED.value and "re-adopt" in after.reason_detail
    state = slurm("squeue", "-h", "-j", hers, "-o", "%T").strip()
    assert state in ("RUNNING", "PENDING")  # her job is hers: left alone
    subprocess.run(["scancel", hers, str(row.external_id)], capture_output=True, check=False)
