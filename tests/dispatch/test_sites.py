"""Sites from settings, and brokering jobs between several sites (fake dispatchers).

The real two-cluster set-up is not needed for what is tested here: which site gets a job is
decided by the core over one snapshot of all sites, and the broker only routes by node. The
same against two real Slurm clusters: tests/slurm/test_two_sites.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import select

from gpucenter.config import Settings
from gpucenter.dispatch.base import (
    Launched,
    LaunchRequest,
    SiteCapabilities,
    SiteKind,
    SiteUnavailable,
    StateChange,
)
from gpucenter.dispatch.broker import SiteBroker
from gpucenter.domain.clock import SystemClock
from gpucenter.domain.cluster import Node, Site
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.ids import JobId
from gpucenter.domain.jobs import JobState, WaitReason
from gpucenter.persistence.db import make_engine, migrate, session_factory
from gpucenter.persistence.tables import JobRow, SiteRow
from gpucenter.services.context import AppContext
from gpucenter.services.jobs import manage as jobs
from gpucenter.services.jobs.submission import JobForm
from gpucenter.services.scheduling.cycle import recover_after_restart, run_pass
from gpucenter.services.sites.config import LoadedSite
from gpucenter.services.sites.runtime import SiteRuntime
from gpucenter.services.wiring import (
    SITE_KINDS,
    SiteKindSupport,
    SiteSpec,
    SiteWiring,
    build_context,
    combine,
    ensure_site,
    parse_site_specs,
)
from tests.dispatch.builders import launch_request
from tests.factories import Centre, seed_centre


@dataclass
class FakeSite:
    """Accepts every job and keeps it running until `end` is called."""

    name: str
    down: bool = False
    kind: SiteKind = SiteKind.SLURM
    submitted: list[JobId] = field(default_factory=list)
    running: set[JobId] = field(default_factory=set)
    ending: list[StateChange] = field(default_factory=list)

    def submit(self, request: LaunchRequest) -> Launched:
        if self.down:
            raise SiteUnavailable(f"{self.name} is down")
        self.submitted.append(request.job_id)
        self.running.add(request.job_id)
        at = SystemClock().now()
        return Launched(request.job_id, f"{self.name}-{request.job_id}", "", "", at)

    def cancel(self, job_id: JobId) -> None:
        self.end(job_id, JobState.CANCELLED)

    def poll(self) -> Sequence[StateChange]:
        if self.down:
            raise SiteUnavailable(f"{self.name} is down")
        out, self.ending = self.ending, []
        return out

    def end(self, job_id: JobId, state: JobState = JobState.COMPLETED) -> None:
        self.running.discard(job_id)
        self.ending.append(StateChange(job_id, state, SystemClock().now(), 0))

    @property
    def capabilities(self) -> SiteCapabilities:
        return SiteCapabilities(self.kind, adopts_after_restart=True)

    @property
    def unavailable(self) -> str:
        return ""

    def running_job_ids(self) -> frozenset[JobId]:
        return frozenset(self.running)

    def adopt(self, job_id: JobId, external_id: str, *_: object) -> bool:
        self.running.add(job_id)
        return True

    def detach(self) -> None:
        self.running.clear()

    def shutdown(self) -> None: ...


def _site(name: str, *nodes: tuple[str, str, int]) -> LoadedSite:
    return LoadedSite(
        Site(name, tuple(Node(n, t, g, name) for n, t, g in nodes)),
        {n: list(range(g)) for n, _, g in nodes},
        frozenset(n for n, _, _ in nodes),
    )


@dataclass
class TwoSites:
    ctx: AppContext
    a: FakeSite
    b: FakeSite
    centre: Centre


@pytest.fixture
def two_sites(tmp_path: Path) -> Iterator[TwoSites]:
    url = f"sqlite:///{tmp_path / 'gpucenter.db'}"
    migrate(url)
    settings = Settings(var_dir=tmp_path / "var", database_url=url)
    engine = make_engine(url)
    a, b = FakeSite("alpha"), FakeSite("beta")
    runtimes = [
        SiteRuntime("alpha", _site("alpha", ("a1", "h100", 4)), a),
        SiteRuntime("beta", _site("beta", ("b1", "h100", 4), ("b2", "b200", 8)), b),
    ]
    site, broker = combine(runtimes)
    ctx = AppContext(
        settings, engine, session_factory(engine), site, broker, SystemClock(), sites=runtimes
    )
    ensure_site(ctx)
    centre = seed_centre(ctx, gpu_hours=1000.0)
    yield TwoSites(ctx, a, b, centre)
    engine.dispose()


def _submit(w: TwoSites, gpu_type: str, gpus: int) -> int:
    form = JobForm(
        project="alpha", command="true", gpus_per_node=gpus, gpu_type=gpu_type, time_limit_s=600
    )
    return jobs.submit(w.ctx, w.centre.alice, form).id


def _row(w: TwoSites, job_id: int) -> JobRow:
    with w.ctx.sessions() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        s.expunge(row)
        return row


def _site_name(w: TwoSites, job_id: int) -> str:
    with w.ctx.sessions() as s:
        row = s.get(JobRow, job_id)
        assert row is not None
        return s.get_one(SiteRow, row.site_id).name


def test_a_gpu_type_only_one_site_has_always_lands_there(two_sites: TwoSites) -> None:
    w = two_sites
    ids = [_submit(w, "b200", 2) for _ in range(4)]
    run_pass(w.ctx)
    assert sorted(w.b.submitted) == sorted(JobId(i) for i in ids) and w.a.submitted == []
    assert {_site_name(w, i) for i in ids} == {"beta"}
    assert all(_row(w, i).external_id == f"beta-{i}" for i in ids)


def test_the_site_that_can_start_a_job_first_gets_it(two_sites: TwoSites) -> None:
    w = two_sites
    first = _submit(w, "h100", 4)
    run_pass(w.ctx)
    busy, free = (w.a, w.b) if w.a.submitted else (w.b, w.a)
    assert busy.submitted == [JobId(first)]
    # The busy site starts the next whole-node h100 job only when the first ends; the other
    # site can start it now: it wins.
    second = _submit(w, "h100", 4)
    run_pass(w.ctx)
    assert free.submitted == [JobId(second)], _row(w, second).reason_detail
    # Both busy: the third waits; the site whose job ends first (here: the first's) gets it.
    third = _submit(w, "h100", 4)
    run_pass(w.ctx)
    assert _row(w, third).state == JobState.PENDING.value
    busy.end(JobId(first))
    run_pass(w.ctx)
    assert busy.submitted == [JobId(first), JobId(third)] and free.submitted == [JobId(second)]


def test_a_site_that_is_down_is_skipped_and_its_only_types_say_so(two_sites: TwoSites) -> None:
    w = two_sites
    w.b.down = True
    h100, b200 = _submit(w, "h100", 1), _submit(w, "b200", 1)
    run_pass(w.ctx)
    assert w.a.submitted == [JobId(h100)]  # the other site still works
    waiting = _row(w, b200)
    assert waiting.state == JobState.PENDING.value
    assert waiting.reason == WaitReason.SITE_UNAVAILABLE.value
    assert "'beta' is unavailable" in waiting.reason_detail
    w.b.down = False
    w.ctx.sites[1].health.retry_at = None  # the backoff has passed
    run_pass(w.ctx)
    assert w.b.submitted == [JobId(b200)]


def test_restart_readopts_each_job_at_its_own_site(two_sites: TwoSites) -> None:
    w = two_sites
    on_b = _submit(w, "b200", 1)
    run_pass(w.ctx)
    w.b.running.clear()  # a new server: its dispatchers watch nothing yet
    assert recover_after_restart(w.ctx) == 1
    assert w.b.running == {JobId(on_b)} and w.a.running == set()
    w.ctx.dispatcher.cancel(JobId(on_b))  # the broker routes the cancel to beta
    assert [c.job_id for c in w.b.ending] == [JobId(on_b)]


def test_broker_refuses_a_placement_over_two_sites() -> None:
    from gpucenter.core.model import NodeGpus
    from gpucenter.dispatch.base import DispatchError

    broker = SiteBroker({"x": FakeSite("x"), "y": FakeSite("y")}, {"n1": "x", "n2": "y"})
    request = launch_request(1, placement=(NodeGpus("n1", (0,)), NodeGpus("n2", (0,))))
    with pytest.raises(DispatchError, match="not on exactly one known site"):
        broker.submit(request)


# ------------------------------------------------------------------ sites from settings
def test_sites_file_names_each_sites_dispatcher(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUCENTER_SLURM_PARTITION", "from-the-environment")
    data = {
        "sites": [
            {
                "name": "alpha",
                "kind": "slurm",
                "slurm": {"conf": "/etc/slurm-a/slurm.conf", "cluster": "alpha"},
            },
            {"name": "lab", "kind": "local", "site_file": "lab.yaml"},
        ]
    }
    alpha, lab = parse_site_specs(data, tmp_path)
    assert (alpha.kind, lab.kind) == ("slurm", "local")
    assert alpha.slurm is not None and alpha.slurm.conf == "/etc/slurm-a/slurm.conf"
    assert alpha.slurm.partition is None  # a site's settings are only those in the file
    assert lab.site_file == tmp_path / "lab.yaml"
    with pytest.raises(ValidationError, match="kind"):
        parse_site_specs({"sites": [{"name": "x", "kind": "nomad"}]}, tmp_path)
    with pytest.raises(ValidationError, match="unique"):
        parse_site_specs({"sites": [{"name": "x"}, {"name": "x"}]}, tmp_path)


def test_build_context_from_a_sites_file_registers_every_site(tmp_path: Path) -> None:
    for name, node, gpu in (("one", "n1", "h100"), ("two", "n2", "b200")):
        (tmp_path / f"{name}.yaml").write_text(
            f"site: {name}\nnodes:\n  - name: {node}\n    gpus: 2\n    gpu_type: {gpu}\n"
        )
    (tmp_path / "sites.yaml").write_text(
        "sites:\n"
        "  - {name: one, kind: local, site_file: one.yaml}\n"
        "  - {name: two, kind: local, site_file: two.yaml}\n"
    )
    url = f"sqlite:///{tmp_path / 'gpucenter.db'}"
    migrate(url)
    settings = Settings(
        var_dir=tmp_path / "var", database_url=url, sites_file=tmp_path / "sites.yaml"
    )
    ctx = build_context(settings)
    try:
        assert [rt.name for rt in ctx.site_runtimes()] == ["one", "two"]
        assert isinstance(ctx.dispatcher, SiteBroker)
        assert ctx.site.site.gpu_types == {"h100", "b200"}
        ensure_site(ctx)
        with ctx.sessions() as s:
            assert sorted(s.scalars(select(SiteRow.name))) == ["one", "two"]
    finally:
        ctx.dispatcher.shutdown()
        ctx.engine.dispose()


def test_a_new_site_kind_is_one_entry_in_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wiring knows kinds only through SITE_KINDS: a kind registered there (here the
    simulator's kind, with settings of its own) is parsed, built and driven like the others."""

    class SimulatedSettings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="GPUCENTER_SIMULATED_")
        gpus: int = 1

    def build(spec: SiteSpec, wiring: SiteWiring) -> SiteRuntime:
        assert isinstance(spec.settings, SimulatedSettings)
        loaded = _site(spec.name, ("s1", "h100", spec.settings.gpus))
        site = FakeSite(spec.name, kind=SiteKind.SIMULATED)
        return SiteRuntime(spec.name, loaded, site, settings=spec.settings)

    monkeypatch.setitem(
        SITE_KINDS,
        SiteKind.SIMULATED,
        SiteKindSupport(SimulatedSettings, build),
    )
    (tmp_path / "lab.yaml").write_text(
        "site: lab\nnodes:\n  - {name: n1, gpus: 2, gpu_type: b200}\n"
    )
    (tmp_path / "sites.yaml").write_text(
        "sites:\n"
        "  - {name: lab, kind: local, site_file: lab.yaml}\n"
        "  - {name: twin, kind: simulated, simulated: {gpus: 8}}\n"
    )
    url = f"sqlite:///{tmp_path / 'gpucenter.db'}"
    migrate(url)
    settings = Settings(
        var_dir=tmp_path / "var", database_url=url, sites_file=tmp_path / "sites.yaml"
    )
    ctx = build_context(settings)
    try:
        lab, twin = ctx.site_runtimes()
        assert (lab.kind, twin.kind) == (SiteKind.LOCAL, SiteKind.SIMULATED)
        assert twin.loaded.site.nodes[0].gpu_count == 8
        ensure_site(ctx)
        with ctx.sessions() as s:
            kinds = {n: k for n, k in s.execute(select(SiteRow.name, SiteRow.kind))}
        assert kinds == {"lab": "local", "twin": "simulated"}
    finally:
        ctx.dispatcher.shutdown()
        ctx.engine.dispose()


def test_node_names_must_be_unique_over_sites() -> None:
    runtimes = [
        SiteRuntime("x", _site("x", ("n", "h100", 1)), FakeSite("x")),
        SiteRuntime("y", _site("y", ("n", "h100", 1)), FakeSite("y")),
    ]
    with pytest.raises(ValidationError, match="unique over all sites"):
        combine(runtimes)


def test_the_example_sites_file_parses() -> None:
    import yaml

    path = Path(__file__).resolve().parents[2] / "examples" / "clusters" / "sites-two-slurm.yaml"
    specs = parse_site_specs(yaml.safe_load(path.read_text()), path.parent)
    assert [(s.name, s.kind) for s in specs] == [("alpha", "slurm"), ("beta", "slurm")]
    assert specs[1].slurm is not None and specs[1].slurm.conf == "/etc/slurm-b/slurm.conf"


@pytest.mark.parametrize("limits", [(3600, 600), (600, 3600)])
def test_a_job_no_site_can_start_now_is_planned_on_the_earliest_site(
    two_sites: TwoSites, limits: tuple[int, int]
) -> None:
    """Both sites busy: the job is not handed to either yet, and its planned start is on the
    site whose running job ends first (by time limit), wherever that is; it goes there once
    that site frees up."""
    w = two_sites
    running: list[tuple[int, FakeSite]] = []
    for limit in limits:
        form = JobForm(
            project="alpha", command="true", gpus_per_node=4, gpu_type="h100", time_limit_s=limit
        )
        job_id = jobs.submit(w.ctx, w.centre.alice, form).id
        run_pass(w.ctx)
        (site,) = [f for f in (w.a, w.b) if JobId(job_id) in f.submitted]
        running.append((job_id, site))
    assert {site.name for _, site in running} == {"alpha", "beta"}  # one on each
    early_job, early = min(zip(limits, running, strict=True))[1]
    late = w.b if early is w.a else w.a
    nodes = {"alpha": "a1", "beta": "b1"}

    queued = _submit(w, "h100", 4)
    run_pass(w.ctx)
    row = _row(w, queued)
    assert row.state == JobState.PENDING.value
    assert JobId(queued) not in w.a.submitted + w.b.submitted  # held by gpucenter, not a site
    assert "expected to start by" in row.reason_detail, row.reason_detail
    assert row.reason_detail.endswith(f" on {nodes[early.name]}"), row.reason_detail

    early.end(JobId(early_job))
    run_pass(w.ctx)
    assert early.submitted[-1] == JobId(queued) and JobId(queued) not in late.submitted
    assert _site_name(w, queued) == early.name
