"""The programme level of the server's share tree: projects under their programmes, weighted
by their current allocations; suspended allocations weigh nothing; programme shares can be set."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from gpucenter.config import Settings
from gpucenter.core import ShareAccount
from gpucenter.core.fairshare import FAIR_TREE, FairShare, compute_factors
from gpucenter.core.fairshare_classic import CLASSIC
from gpucenter.domain.allocations import AllocationState
from gpucenter.domain.ids import ProjectId
from gpucenter.persistence.tables import AllocationRow, ProjectRow
from gpucenter.persistence.tables_allocation import (
    ApplicationRow,
    AwardRow,
    AwardRunRow,
    CallRow,
    ProgrammeRow,
)
from gpucenter.services.context import AppContext
from gpucenter.services.fairshare import DIRECT, load_fair_share
from gpucenter.services.wiring import policies_from
from tests.factories import Centre, make_context, seed_centre

NOW = datetime.now(tz=UTC)


def _now() -> datetime:
    """After the seeded allocations started (they start when they are made)."""
    return datetime.now(tz=UTC)


def _award(ctx: AppContext, centre: Centre, project: str, programme: str, hours: float) -> None:
    """Give `project` an allocation of `hours` awarded under `programme` (made if missing)."""
    with ctx.sessions.begin() as s:
        prog = s.scalars(select(ProgrammeRow).where(ProgrammeRow.name == programme)).first()
        if prog is None:
            prog = ProgrammeRow(name=programme, title=programme, owner="MSIT", created_at=NOW)
            s.add(prog)
            s.flush()
        call = CallRow(
            programme_id=prog.id,
            name=f"{programme}-{project}",
            opens_at=NOW,
            closes_at=NOW,
            state="decided",
            config={},
            created_at=NOW,
        )
        s.add(call)
        s.flush()
        run = AwardRunRow(
            call_id=call.id,
            created_at=NOW,
            method="milp",
            gap=0.0,
            objective=1.0,
            greedy_objective=1.0,
            decided=True,
            result={},
        )
        row = s.scalars(select(ProjectRow).where(ProjectRow.name == project)).one()
        app = ApplicationRow(
            call_id=call.id,
            applicant_id=centre.alice.user_id,
            organisation_id=row.organisation_id,
            title="t",
            plan="",
            team=[],
            region="busan",
            kind="gpu_hours",
            min_gpu_hours=0.0,
            tags=[],
            state="awarded",
            created_at=NOW,
        )
        s.add_all([run, app])
        s.flush()
        award = AwardRow(
            call_id=call.id,
            application_id=app.id,
            run_id=run.id,
            project_id=row.id,
            gpu_hours=hours,
            cells=[],
            lease_gpus=0,
            decided_at=NOW,
        )
        s.add(award)
        s.flush()
        alloc = s.scalars(select(AllocationRow).where(AllocationRow.project_id == row.id)).one()
        alloc.award_id = award.id
        alloc.gpu_seconds = int(hours * 3600)


def _programmes(root: ShareAccount) -> dict[str, ShareAccount]:
    return {p.name: p for p in root.children}


def _projects(account: ShareAccount) -> dict[str, ShareAccount]:
    return {project.name: project for org in account.children for project in org.children}


@pytest.fixture
def centre_ctx(settings: Settings) -> tuple[AppContext, Centre]:
    ctx = make_context(settings)
    centre = seed_centre(ctx, gpu_hours=10)
    yield ctx, centre
    ctx.dispatcher.shutdown()
    ctx.engine.dispose()


def test_projects_sit_under_the_programme_that_awarded_them(
    centre_ctx: tuple[AppContext, Centre],
) -> None:
    ctx, centre = centre_ctx
    _award(ctx, centre, "alpha", "ai-2026", 600)
    _award(ctx, centre, "beta", "foundation", 400)
    with ctx.sessions.begin() as s:
        tree = load_fair_share(s, _now()).root
    programmes = _programmes(tree)
    assert set(programmes) == {"ai-2026", "foundation"}
    assert programmes["ai-2026"].shares == pytest.approx(600)
    assert programmes["foundation"].shares == pytest.approx(400)
    assert set(_projects(programmes["ai-2026"])) == {"alpha"}
    assert set(_projects(programmes["foundation"])) == {"beta"}
    # Programme shares set by the centre override the sum of their projects'.
    with ctx.sessions.begin() as s:
        tree = load_fair_share(s, _now(), {"foundation": 1000.0}).root
    assert _programmes(tree)["foundation"].shares == 1000.0
    assert _programmes(tree)["ai-2026"].shares == pytest.approx(600)


def test_allocations_made_directly_sit_under_the_direct_programme(
    centre_ctx: tuple[AppContext, Centre],
) -> None:
    ctx, _ = centre_ctx
    with ctx.sessions.begin() as s:
        tree = load_fair_share(s, _now()).root
    assert set(_programmes(tree)) == {DIRECT}
    assert _programmes(tree)[DIRECT].shares == pytest.approx(20)


@pytest.mark.parametrize("state", [AllocationState.SUSPENDED, AllocationState.EXPIRED])
def test_a_suspended_or_expired_allocation_has_no_fair_share_weight(
    centre_ctx: tuple[AppContext, Centre], state: AllocationState
) -> None:
    ctx, _ = centre_ctx
    with ctx.sessions.begin() as s:
        beta = s.scalars(select(ProjectRow).where(ProjectRow.name == "beta")).one()
        alloc = s.scalars(select(AllocationRow).where(AllocationRow.project_id == beta.id)).one()
        alloc.state = state.value
        beta_id = ProjectId(beta.id)
        alpha_id = ProjectId(
            s.scalars(select(ProjectRow.id).where(ProjectRow.name == "alpha")).one()
        )
    with ctx.sessions.begin() as s:
        share = load_fair_share(s, _now())
    projects = _projects(_programmes(share.root)[DIRECT])
    assert projects["beta"].shares == 0.0
    assert projects["alpha"].shares == pytest.approx(10)
    # With no usage at all, the project with a live allocation ranks first.
    factors = compute_factors(FairShare(share.root, {}))
    assert factors.by_project[alpha_id] > factors.by_project[beta_id]


def test_the_centres_fair_share_settings_reach_the_core(tmp_path: Path) -> None:
    settings = Settings(
        var_dir=tmp_path,
        fair_share_policy="classic",
        programme_entitlements={"foundation": {"h100": 4096}},
    )
    policies = policies_from(settings)
    assert policies.fair_share is CLASSIC
    assert policies.entitlements["foundation"]["h100"] == 4096
    assert policies_from(Settings(var_dir=tmp_path)).fair_share is FAIR_TREE
