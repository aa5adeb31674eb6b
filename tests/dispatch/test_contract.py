"""The site contract, run against every dispatcher kind: each has every member of the
`Dispatcher` protocol, and behaves as its declared `SiteCapabilities` say.

Kinds: the local one (real processes on a manual clock; once with a fake NVML so that it
measures utilisation), the simulator's, Slurm's against a small fake cluster behind the
`SlurmCli` transport (it runs jobs on the test's clock, ends them at their ``--time``), and a
broker over a simulated site. No kind is skipped for a capability: where a kind lacks one,
the defined answer is checked instead (adopt says False, an image is refused, no
utilisation comes back).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gpucenter.core.model import NodeGpus
from gpucenter.dispatch.base import (
    Dispatcher,
    DispatchError,
    LaunchRequest,
    SiteCapabilities,
    SiteKind,
    StateChange,
)
from gpucenter.dispatch.broker import SiteBroker
from gpucenter.dispatch.gpuutil import UtilisationSampler
from gpucenter.dispatch.local.dispatcher import LocalDispatcher
from gpucenter.dispatch.slurm.cli import Result, SlurmCli
from gpucenter.dispatch.slurm.dispatcher import SlurmDispatcher
from gpucenter.domain.clock import ManualClock
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState
from gpucenter.sim.dispatcher import SimDispatcher
from tests.dispatch.builders import launch_request

START = 1_900_000_000.0  # the manual clocks' epoch (a whole second, as Slurm prints)
MEMBERS = sorted(name for name in vars(Dispatcher) if not name.startswith("_"))


# --------------------------------------------------------------- a fake Slurm cluster
@dataclass
class _SlurmJob:
    external_id: str
    comment: str
    start: float
    limit_s: float
    run_s: float
    state: str = "RUNNING"
    end: float | None = None
    exit: str = ""


@dataclass
class FakeSlurm:
    """Just enough of sbatch/squeue/sacct/scancel: jobs run ``sleep N`` for N seconds of the
    test's clock and end at their time limit (TIMEOUT) or when cancelled."""

    clock: ManualClock
    jobs: dict[str, _SlurmJob] = field(default_factory=dict)

    def __call__(
        self, argv: Sequence[str], stdin: str | None, env: Mapping[str, str], timeout: float
    ) -> Result:
        tool, args = os.path.basename(argv[0]), list(argv[1:])
        self._advance()
        if tool == "sbatch":
            return self._sbatch(args, stdin or "")
        if tool == "squeue":
            rows = [j for j in self.jobs.values() if j.state == "RUNNING"]
            return Result(
                0,
                "".join(
                    f"{j.external_id}|RUNNING|None|{_t(j.start)}|Unknown|{j.comment}\n"
                    for j in rows
                ),
                "",
            )
        if tool == "sacct":
            wanted = args[args.index("-j") + 1].split(",")
            rows = [self.jobs[i] for i in wanted if i in self.jobs]
            return Result(
                0,
                "".join(
                    f"{j.external_id}|{j.state}|{j.exit}|{_t(j.start)}|{_t(j.end)}|None\n"
                    for j in rows
                ),
                "",
            )
        if tool == "scancel":
            self._end(self.jobs[args[0]], "CANCELLED", self.clock.now(), "0:15")
            return Result(0, "", "")
        return Result(1, "", f"{tool}: not faked")

    def _sbatch(self, args: list[str], script: str) -> Result:
        opt = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
        sleep = re.search(r"sleep (\d+(?:\.\d+)?)", script)
        external_id = str(100 + len(self.jobs))
        self.jobs[external_id] = _SlurmJob(
            external_id,
            opt["comment"],
            self.clock.now(),
            limit_s=60.0 * int(opt["time"]),
            run_s=float(sleep.group(1)) if sleep else 0.0,
        )
        self._advance()
        return Result(0, f"{external_id}\n", "")

    def _advance(self) -> None:
        now = self.clock.now()
        for job in self.jobs.values():
            if job.state != "RUNNING":
                continue
            if now >= job.start + job.limit_s:
                self._end(job, "TIMEOUT", job.start + job.limit_s, "0:15")
            elif now >= job.start + job.run_s:
                self._end(job, "COMPLETED", job.start + job.run_s, "0:0")

    @staticmethod
    def _end(job: _SlurmJob, state: str, at: float, exit: str) -> None:
        job.state, job.end, job.exit = state, at, exit


def _t(at: float | None) -> str:
    if at is None:
        return "Unknown"
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


# ------------------------------------------------------------------------- the kinds
@dataclass
class Site:
    """One kind under test: how to make its dispatcher (again, as a restarted server would)
    and how time passes for it."""

    kind: SiteKind
    clock: ManualClock
    make: Callable[[], Dispatcher]
    run_times: dict[JobId, float]
    made: list[Dispatcher] = field(default_factory=list)

    def dispatcher(self) -> Dispatcher:
        made = self.make()
        self.made.append(made)
        return made

    def request(self, job_id: int, seconds: float, **kw: object) -> LaunchRequest:
        """A job that runs `seconds` (a real ``sleep`` where something runs it)."""
        self.run_times[JobId(job_id)] = seconds
        return launch_request(job_id, f"sleep {seconds:g}", **kw)

    def tick(self, seconds: float = 1.0) -> None:
        self.clock.advance(seconds)
        time.sleep(0.02)  # real processes, where there are any, get their turn


def _local(tmp_path: Path, clock: ManualClock, **kw: object) -> Callable[[], Dispatcher]:
    return lambda: LocalDispatcher(tmp_path / "logs", clock=clock, kill_grace_s=0.2, **kw)


def _site(name: str, tmp_path: Path) -> Site:
    clock = ManualClock(START)
    run_times: dict[JobId, float] = {}
    if name == "local":
        make = _local(tmp_path, clock)
        return Site(SiteKind.LOCAL, clock, make, run_times)
    if name == "local-measured":
        sampler = UtilisationSampler(lambda index: 50.0)
        make = _local(
            tmp_path, clock, sampler=sampler, measured_nodes=frozenset({"local"}), sample_every_s=0
        )
        return Site(SiteKind.LOCAL, clock, make, run_times)
    if name == "simulated":
        return Site(SiteKind.SIMULATED, clock, lambda: SimDispatcher(clock, run_times), run_times)
    if name == "slurm":
        cli = SlurmCli(runner=FakeSlurm(clock))
        make_slurm = lambda: SlurmDispatcher(tmp_path / "logs", cli=cli, clock=clock)  # noqa: E731
        return Site(SiteKind.SLURM, clock, make_slurm, run_times)
    assert name == "broker"
    return Site(
        SiteKind.BROKER,
        clock,
        lambda: SiteBroker({"sim": SimDispatcher(clock, run_times)}, {"local": "sim"}),
        run_times,
    )


KINDS = ["local", "local-measured", "simulated", "slurm", "broker"]


@pytest.fixture(params=KINDS)
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    made = _site(request.param, tmp_path)
    yield made
    for dispatcher in made.made:
        dispatcher.shutdown()


def wait_end(site: Site, d: Dispatcher, job_id: int, timeout_s: float = 10.0) -> StateChange:
    """Poll (time moving on) until the job's end comes out; it must come out once."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [c for c in d.poll() if c.job_id == job_id]
        if found:
            assert len(found) == 1
            assert JobId(job_id) not in d.running_job_ids()
            return found[0]
        site.tick()
    pytest.fail(f"job {job_id} did not end within {timeout_s} s")


# ------------------------------------------------------------------------- the contract
def test_every_member_of_the_protocol_is_there(site: Site) -> None:
    d = site.dispatcher()
    assert isinstance(d, Dispatcher)
    assert MEMBERS == [
        "adopt",
        "cancel",
        "capabilities",
        "detach",
        "poll",
        "running_job_ids",
        "shutdown",
        "submit",
        "unavailable",
    ]
    for name in MEMBERS:
        assert hasattr(d, name), name
    assert isinstance(d.capabilities, SiteCapabilities)
    assert d.capabilities.kind is site.kind
    assert d.capabilities == d.capabilities  # constant: read it as often as you like
    assert d.unavailable == ""


def test_a_job_is_watched_from_submit_until_its_end_is_reported_once(site: Site) -> None:
    d = site.dispatcher()
    launched = d.submit(site.request(1, 0.1))
    assert launched.job_id == JobId(1) and launched.external_id
    assert JobId(1) in d.running_job_ids()
    assert wait_end(site, d, 1).state is JobState.COMPLETED
    assert d.poll() == [] and d.running_job_ids() == frozenset()
    assert d.unavailable == ""


def test_cancel_ends_a_job_and_ignores_an_unknown_one(site: Site) -> None:
    d = site.dispatcher()
    d.submit(site.request(2, 3600))
    d.cancel(JobId(404))
    d.cancel(JobId(2))
    if site.kind in (SiteKind.SIMULATED, SiteKind.BROKER):
        # A simulated job simply stops (a preemption): nobody reports it afterwards.
        assert d.poll() == [] and JobId(2) not in d.running_job_ids()
        return
    assert wait_end(site, d, 2).state is JobState.CANCELLED


def test_the_time_limit_is_enforced_as_declared(site: Site) -> None:
    d = site.dispatcher()
    d.submit(site.request(3, 3600, time_limit_s=60))
    site.tick(61)
    if d.capabilities.enforces_time_limit:
        assert wait_end(site, d, 3).state is JobState.TIMEOUT
    else:  # the job runs on past its limit
        for _ in range(3):
            assert all(c.job_id != 3 for c in d.poll())
            site.tick()
        assert JobId(3) in d.running_job_ids()


def test_a_restarted_server_adopts_running_jobs_as_declared(site: Site) -> None:
    before = site.dispatcher()
    launched = before.submit(site.request(4, 3600))
    before.detach()  # the old server goes away; the job does not
    assert before.running_job_ids() == frozenset() and before.poll() == []
    after = site.dispatcher()
    adopted = after.adopt(
        JobId(4), launched.external_id, launched.started_at, 3600, launched.stderr_path
    )
    assert adopted is after.capabilities.adopts_after_restart
    assert (JobId(4) in after.running_job_ids()) is adopted
    if adopted:  # it is the same job, still running: cancel it through the new server
        after.cancel(JobId(4))
        assert wait_end(site, after, 4).state is JobState.CANCELLED


def test_a_container_image_is_run_or_refused_as_declared(site: Site) -> None:
    d = site.dispatcher()
    request = site.request(5, 0.1, image="registry.example/train:1")
    if d.capabilities.containers:
        d.submit(request)
        assert wait_end(site, d, 5).state is JobState.COMPLETED
    else:
        with pytest.raises(DispatchError, match="image"):
            d.submit(request)
        assert d.running_job_ids() == frozenset()


def test_utilisation_comes_back_as_declared(site: Site) -> None:
    d = site.dispatcher()
    d.submit(site.request(6, 0.2, placement=(NodeGpus("local", (0, 1)),)))
    ended = wait_end(site, d, 6)
    if d.capabilities.reports_utilisation:
        assert ended.gpu_util is not None and ended.gpu_util[0] == 50.0
    else:
        assert ended.gpu_util is None


def test_shutdown_forgets_every_job(site: Site) -> None:
    d = site.dispatcher()
    d.submit(site.request(7, 3600))
    d.shutdown()
    assert d.running_job_ids() == frozenset()
