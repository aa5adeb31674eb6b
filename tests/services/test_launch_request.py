"""The job's whole shape reaches the Slurm dispatcher in its `LaunchRequest`: GPU type, GPUs
per node, nodes, owner, account, name. The dispatcher is given no database at all (no
sessions, no observer), so nothing it sends to sbatch can come from a read of its own."""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import update

from gpucenter.config import Settings
from gpucenter.core.model import NodeGpus
from gpucenter.dispatch.base import JobOwner, SiteKind
from gpucenter.dispatch.slurm import dispatcher as slurm_dispatcher
from gpucenter.dispatch.slurm.cli import Result, SlurmCli
from gpucenter.dispatch.slurm.dispatcher import SlurmDispatcher
from gpucenter.domain.clock import SystemClock
from gpucenter.domain.cluster import Node, Site
from gpucenter.domain.jobs import GpuRequest, JobState
from gpucenter.persistence.db import make_engine, session_factory
from gpucenter.persistence.tables import JobRow, UserRow
from gpucenter.services.context import AppContext
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.scheduling.cycle import run_pass
from gpucenter.services.sites.config import LoadedSite
from gpucenter.services.wiring import ensure_site
from tests.dispatch.builders import launch_request
from tests.factories import seed_centre


class Sbatch:
    """A Slurm that accepts every job (id 501...) and knows of none afterwards."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(
        self, argv: Sequence[str], stdin: str | None, env: Mapping[str, str], timeout: float
    ) -> Result:
        if argv[0] == "sbatch":
            self.calls.append(list(argv[1:]))
            return Result(0, f"{500 + len(self.calls)}\n", "")
        return Result(0, "", "")  # squeue, sacct: nothing to report yet


def test_the_shape_not_the_placement_sizes_the_slurm_job(tmp_path: Path) -> None:
    sbatch = Sbatch()
    uid, gid = os.geteuid(), os.getegid()  # one the test may hand a directory to
    tmp_path.chmod(0o711)  # the site's log directory: gpucenter makes each owner's below it
    dispatcher = SlurmDispatcher(tmp_path, cli=SlurmCli(runner=sbatch), run_as_owner=True)
    request = launch_request(
        9,
        "python train.py",
        # Two nodes of one GPU each in the (advisory) placement; the job asked for 4 x b200.
        placement=(NodeGpus("n1", (0,)), NodeGpus("n2", (0,))),
        owner=JobOwner("ann", uid=uid, gid=gid),
        project="proj",
        name="train",
        qos="opportunistic",
    )
    dispatcher.submit(replace(request, gpu=GpuRequest("b200", 4, 2)))
    (args,) = sbatch.calls
    assert "--gres=gpu:b200:4" in args and "--nodes=2" in args
    assert f"--uid={uid}" in args and f"--gid={gid}" in args  # the owner's own ids
    assert "--account=gpucenter_proj" in args and "--qos=opportunistic" in args
    assert "--job-name=train" in args


def test_a_scheduled_job_reaches_slurm_with_its_shape_and_owner(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = (Node("n1", "h100", 4, "b1"), Node("n2", "h100", 4, "b1"))
    site = LoadedSite(Site("slurm", nodes), {n.name: [0, 1, 2, 3] for n in nodes}, frozenset())
    sbatch = Sbatch()
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    settings.log_dir.chmod(0o711)  # the site's log directory: gpucenter makes each owner's
    dispatcher = SlurmDispatcher(
        settings.log_dir, cli=SlurmCli(runner=sbatch), run_as_owner=True
    )  # no sessions, no observer: it cannot read the database
    engine = make_engine(settings.effective_database_url)
    ctx = AppContext(settings, engine, session_factory(engine), site, dispatcher, SystemClock())
    try:
        ensure_site(ctx)
        centre = seed_centre(ctx)
        uid, gid = os.geteuid(), os.getegid()
        # alice's account at the site, by her name (one directory service with the host);
        # a local site's account on her row (gpc-...) is not the cluster's and goes unused.
        real = pwd.getpwnam

        def getpwnam(name: str) -> pwd.struct_passwd:
            if name != "alice":
                return real(name)
            return pwd.struct_passwd((name, "x", uid, gid, "", "/nonexistent", "/bin/sh"))

        monkeypatch.setattr(slurm_dispatcher.pwd, "getpwnam", getpwnam)
        with ctx.sessions.begin() as s:
            s.execute(
                update(UserRow)
                .where(UserRow.username == "alice")
                .values(unix_uid=200_777, unix_gid=300_777)
            )
        form = JobForm(
            project="alpha",
            command="python train.py",
            gpus_per_node=4,
            nodes=2,
            gpu_type="h100",
            time_limit_s=600,
            name="train",
        )
        job_id = jobs.submit(ctx, centre.alice, form).id
        run_pass(ctx)
        (args,) = sbatch.calls
        assert "--gres=gpu:h100:4" in args and "--nodes=2" in args and "--time=10" in args
        assert "--uid=alice" in args and f"--gid={gid}" in args  # its owner's, by name
        assert "--account=gpucenter_alpha" in args and "--job-name=train" in args
        assert any(a.startswith(f"--comment=gpucenter:{job_id}:1:") for a in args)  # marker
        assert not any(a.startswith("--qos") for a in args)  # normal: the account's default
        with ctx.sessions() as s:
            row = s.get(JobRow, job_id)
            assert row is not None
            assert (row.state, row.external_id) == (JobState.RUNNING.value, "501")
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("kind", "keeps_ids"),
    [(SiteKind.LOCAL, True), (SiteKind.SLURM, False), (SiteKind.KUBERNETES, True)],
)
def test_a_slurm_site_gets_the_owner_by_name_not_the_local_ids(
    kind: SiteKind, keeps_ids: bool
) -> None:
    """The uid on a user's row is the local site's account (gpc-...). A Slurm site has its
    own users: given that uid, `sbatch --uid` named an account with no association there
    and every job waited with "Invalid account" in a centre with both kinds of site."""
    request = launch_request(3, owner=JobOwner("ann", uid=200_001, gid=300_001))
    seen = request.for_site(kind)
    assert seen.owner.username == "ann"
    assert (seen.owner.uid, seen.owner.gid) == ((200_001, 300_001) if keeps_ids else (None, None))
    assert replace(seen, owner=request.owner) == request  # nothing else changes
