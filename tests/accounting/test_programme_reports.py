"""Reports by programme and strategic field, delivered versus policy share, and the
programme manager's scope, over allocations that came from a real award chain."""

from __future__ import annotations

from collections import defaultdict

import pytest
from sqlalchemy import select

from gpucenter.accounting.report import Dimension
from gpucenter.auth.permissions import Caller, Role
from gpucenter.domain.errors import PermissionDenied
from gpucenter.persistence.tables import AllocationRow, LedgerEntryRow, OrganisationRow, ProjectRow
from gpucenter.persistence.tables_allocation import (
    ApplicationRow,
    AwardRow,
    AwardRunRow,
    CallRow,
    ProgrammeRow,
)
from gpucenter.services.accounting import reports
from tests.accounting.conftest import T0, World, add_job, run_and_charge

SHARES = [{"name": "startups_smes", "applicant_types": ["startup", "sme"], "min_share": 0.3}]


def _award_chain(w: World) -> tuple[int, int]:
    """Programme 'ai-2026', call 'r1'; alpha's allocation tagged semiconductors, beta's AI."""
    with w.ctx.sessions.begin() as s:
        prog = ProgrammeRow(name="ai-2026", title="", owner="MSIT", created_at=T0)
        s.add(prog)
        s.flush()
        call = CallRow(
            programme_id=prog.id,
            name="r1",
            title="",
            opens_at=T0,
            closes_at=T0,
            state="decided",
            config={"shares": SHARES},
            created_at=T0,
        )
        s.add(call)
        s.flush()
        run = AwardRunRow(
            call_id=call.id,
            created_at=T0,
            method="milp",
            gap=0.0,
            objective=1.0,
            greedy_objective=1.0,
            decided=True,
            result={},
        )
        s.add(run)
        s.flush()
        for alloc_id, tag in (
            (w.alpha_alloc, "semiconductors_displays"),
            (w.beta_alloc, "artificial_intelligence"),
        ):
            alloc = s.get(AllocationRow, alloc_id)
            assert alloc is not None
            project = s.get(ProjectRow, alloc.project_id)
            assert project is not None
            app = ApplicationRow(
                call_id=call.id,
                applicant_id=w.centre.alice.user_id,
                organisation_id=project.organisation_id,
                title="t",
                plan="",
                team=[],
                region="busan",
                kind="gpu_hours",
                min_gpu_hours=0.0,
                tags=["misc", tag],
                state="awarded",
                created_at=T0,
            )
            s.add(app)
            s.flush()
            award = AwardRow(
                call_id=call.id,
                application_id=app.id,
                run_id=run.id,
                project_id=project.id,
                gpu_hours=100.0,
                cells=[],
                lease_gpus=0,
                decided_at=T0,
            )
            s.add(award)
            s.flush()
            alloc.award_id = award.id
        return prog.id, call.id


def test_programme_field_and_share_reports_match_raw_rows(world: World) -> None:
    programme_id, call_id = _award_chain(world)
    with world.ctx.sessions.begin() as s:
        for alpha, hours in ((True, 6.0), (False, 2.0), (True, 1.5)):
            run_and_charge(s, add_job(s, world, alpha=alpha), hours * 3600)
    manager = Caller(
        user_id=99,
        username="pm",
        is_admin=False,
        project_ids=frozenset(),
        roles=frozenset({(Role.PROGRAMME_MANAGER, programme_id)}),
    )
    with world.ctx.sessions.begin() as s:
        by_field = reports.usage_report(
            s, manager, [Dimension.PROGRAMME, Dimension.STRATEGIC_FIELD], "2026-03", "2026-03"
        )
        share_rows = reports.share_report(s, manager, call_id, "2026-03", "2026-03")
        expected: dict[str, float] = defaultdict(float)
        for e, kind in s.execute(
            select(LedgerEntryRow, OrganisationRow.kind)
            .join(AllocationRow, AllocationRow.id == LedgerEntryRow.allocation_id)
            .join(ProjectRow, ProjectRow.id == AllocationRow.project_id)
            .join(OrganisationRow, OrganisationRow.id == ProjectRow.organisation_id)
        ):
            expected[kind] += e.gpu_seconds / 3600
    assert {(r.key["programme"], r.key["strategic_field"]): r.gpu_hours for r in by_field} == {
        ("ai-2026", "semiconductors_displays"): pytest.approx(expected["university"]),
        ("ai-2026", "artificial_intelligence"): pytest.approx(expected["startup"]),
    }
    rule = next(r for r in share_rows if r.rule == "startups_smes")
    total = sum(expected.values())
    assert rule.delivered_share == pytest.approx(expected["startup"] / total)
    assert rule.min_share == 0.3 and rule.within is False  # 2 of 9.5 GPU-hours: below 30%
    other = Caller(
        user_id=98,
        username="pm2",
        is_admin=False,
        project_ids=frozenset(),
        roles=frozenset({(Role.PROGRAMME_MANAGER, programme_id + 1)}),
    )
    with world.ctx.sessions.begin() as s:
        assert reports.usage_report(s, other, [Dimension.MONTH], "2026-03", "2026-03") == []
        with pytest.raises(PermissionDenied):
            reports.share_report(s, other, call_id, "2026-03", "2026-03")
