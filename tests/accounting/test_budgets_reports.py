"""Budget alerts and enforcement; reports checked against figures computed from raw rows."""

from __future__ import annotations

import io
import json
import random
import zipfile
from collections import defaultdict
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from gpucenter.accounting.report import Dimension
from gpucenter.domain.errors import PermissionDenied
from gpucenter.persistence.tables import (
    AllocationRow,
    JobRow,
    LedgerEntryRow,
    OrganisationRow,
    ProjectRow,
    SiteRow,
)
from gpucenter.persistence.tables_accounting import BudgetAlertRow, NotificationRow
from gpucenter.services.accounting import budgets, reports
from gpucenter.services.accounting.ledger import refund_job_run
from gpucenter.services.accounting.useit import assess_use, reclaim
from tests.accounting.conftest import (
    ADMIN,
    T0,
    World,
    add_job,
    manager_of_everything,
    run_and_charge,
)

HOUR = 3600.0


def _use(w: World, hours: float, *, alpha: bool = True, when=T0) -> JobRow:
    with w.ctx.sessions.begin() as s:
        job = add_job(s, w, alpha=alpha, started=when)
        run_and_charge(s, job, hours * HOUR)
    return job


def test_crossing_80_percent_raises_exactly_one_alert(world: World) -> None:
    _use(world, 70)
    with world.ctx.sessions.begin() as s:
        first = budgets.check_budgets(s, T0)
    assert [(a.allocation_id, a.threshold) for a in first] == [(world.alpha_alloc, 50)]
    _use(world, 11)  # 81%
    with world.ctx.sessions.begin() as s:
        second = budgets.check_budgets(s, T0)
    with world.ctx.sessions.begin() as s:
        third = budgets.check_budgets(s, T0)
        n80 = s.scalar(
            select(func.count()).select_from(BudgetAlertRow).where(BudgetAlertRow.threshold == 80)
        )
        notes = list(s.scalars(select(NotificationRow)))
    assert [a.threshold for a in second] == [80] and third == []
    assert n80 == 1
    assert {n.user_id for n in notes} == {world.centre.alice.user_id} and len(notes) == 2


@pytest.mark.parametrize("action", ["hold", "opportunistic"])
def test_crossing_100_percent_applies_the_configured_enforcement(
    world: World, action: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gpucenter.persistence.tables_accounting import BudgetPolicyRow

    with world.ctx.sessions.begin() as s:
        s.add(BudgetPolicyRow(programme_id=42, on_exhausted=action, updated_at=T0))
        pending = add_job(s, world, alpha=True, started=None, state="PENDING")
    _use(world, 101)
    # The allocation stands for one awarded under programme 42 (the award flow is tested
    # elsewhere); what matters here is that programme's configured action.
    monkeypatch.setattr(budgets, "programme_of_allocation", lambda s, a: 42)
    with world.ctx.sessions.begin() as s:
        alerts = budgets.check_budgets(s, T0)
    assert [a.threshold for a in alerts] == [50, 80, 100]
    assert alerts[-1].action == action
    with world.ctx.sessions.begin() as s:
        alloc = s.get(AllocationRow, world.alpha_alloc)
        job = s.get(JobRow, pending.id)
        assert alloc is not None and job is not None
        assert alloc.state == "exhausted"
        assert job.qos == ("opportunistic" if action == "opportunistic" else "normal")
        assert budgets.check_budgets(s, T0) == []


def test_email_goes_out_once_per_notification(world: World) -> None:
    sent: list[tuple[str, str]] = []

    class FakeMailer:
        def send(self, to: str, subject: str, body: str) -> None:
            sent.append((to, subject))

    _use(world, 60)
    with world.ctx.sessions.begin() as s:
        budgets.check_budgets(s, T0)
    assert budgets.deliver_email(world.ctx.sessions, FakeMailer(), T0, "example.kr") == 1
    assert budgets.deliver_email(world.ctx.sessions, FakeMailer(), T0, "example.kr") == 0
    assert sent[0][0] == "alice@example.kr"


def test_burn_down_projects_exhaustion(world: World) -> None:
    _use(world, 7 * 2, when=T0 - timedelta(days=3))  # 14 GPU-hours within the last week
    with world.ctx.sessions.begin() as s:
        (view,) = budgets.budgets(s, world.centre.alice, T0)
    assert view.burn.burn_rate_gpu_hours_per_day == pytest.approx(2.0)
    assert view.burn.projected_exhaustion == T0 + timedelta(days=43)


def _random_usage(w: World, seed: int = 3) -> None:
    rng = random.Random(seed)
    with w.ctx.sessions.begin() as s:
        for _ in range(40):
            started = T0 + timedelta(days=rng.randrange(-40, 50), hours=rng.randrange(24))
            job = add_job(
                s,
                w,
                alpha=rng.random() < 0.5,
                gpu_type=rng.choice(["h100", "b200", "rngd"]),
                gpus=rng.choice([1, 8]),
                submitted=started - timedelta(minutes=rng.randrange(0, 600)),
                started=started,
                site_b=rng.random() < 0.4,
            )
            run_and_charge(s, job, rng.uniform(60, 20000))
        refund_job_run(s, ADMIN, job.id, None, "node failure", T0 + timedelta(days=1))


RATES = {
    (2026, "h100"): (3000.0, 1.0),
    (2026, "b200"): (7000.0, 2.0),
    (2025, "h100"): (2000.0, 1.0),
}


def _independent(w: World, first: str, last: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(month, applicant type) -> (GPU-hours, KRW) straight from ledger, jobs and orgs."""
    out: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    with w.ctx.sessions.begin() as s:
        kinds = dict(
            s.execute(
                select(AllocationRow.id, OrganisationRow.kind)
                .join(ProjectRow, ProjectRow.id == AllocationRow.project_id)
                .join(OrganisationRow, OrganisationRow.id == ProjectRow.organisation_id)
            ).all()
        )
        for e in s.scalars(select(LedgerEntryRow)):
            month = f"{e.created_at:%Y-%m}"
            if not first <= month <= last:
                continue
            rate = RATES.get((int(month[:4]), e.gpu_type), (0.0, 1.0))[0]
            acc = out[(month, kinds[e.allocation_id])]
            acc[0] += e.gpu_seconds / HOUR
            acc[1] += e.gpu_seconds / HOUR * rate
    return {k: (v[0], v[1]) for k, v in out.items()}


def test_monthly_report_by_applicant_type_matches_the_raw_rows(world: World) -> None:
    _random_usage(world)
    with world.ctx.sessions.begin() as s:
        rows = reports.usage_report(
            s, ADMIN, [Dimension.MONTH, Dimension.APPLICANT_TYPE], "2026-01", "2026-04"
        )
    expected = _independent(world, "2026-01", "2026-04")
    got = {(r.key["month"], r.key["applicant_type"]): (r.gpu_hours, r.value_krw) for r in rows}
    assert set(got) == set(expected)
    for key, (hours, krw) in expected.items():
        assert got[key][0] == pytest.approx(hours, rel=1e-9)
        assert got[key][1] == pytest.approx(krw, rel=1e-9)


def test_supplier_statement_and_site_figures_match_raw_rows(world: World) -> None:
    _random_usage(world, seed=11)
    with world.ctx.sessions.begin() as s:
        lines = reports.supplier_statement(s, ADMIN, "2026-03")
        util = {u.site: u for u in reports.site_utilisation(s, ADMIN, "2026-03")}
        delays = reports.queue_delay(s, ADMIN, "2026-03")
        names = dict(s.execute(select(SiteRow.id, SiteRow.name)).all())
        expected: dict[tuple[str, str], float] = defaultdict(float)
        waits: dict[str, list[float]] = defaultdict(list)
        for e, site_id in s.execute(
            select(LedgerEntryRow, JobRow.site_id).join(JobRow, JobRow.id == LedgerEntryRow.job_id)
        ):
            if f"{e.created_at:%Y-%m}" == "2026-03":
                expected[(names[site_id], e.gpu_type)] += e.gpu_seconds / HOUR
        for j, kind in s.execute(
            select(JobRow, OrganisationRow.kind)
            .join(ProjectRow, ProjectRow.id == JobRow.project_id)
            .join(OrganisationRow, OrganisationRow.id == ProjectRow.organisation_id)
        ):
            if j.started_at is not None and f"{j.started_at:%Y-%m}" == "2026-03":
                waits[kind].append((j.started_at - j.submitted_at).total_seconds() / HOUR)
    assert {(x.site, x.gpu_type): pytest.approx(x.gpu_hours) for x in lines} == expected
    local_hours = sum(v for (site, _), v in expected.items() if site == "local")
    assert util["local"].delivered_gpu_hours == pytest.approx(local_hours)
    assert util["local"].capacity_gpu_hours == pytest.approx(4 * 31 * 24)
    for d in delays:
        assert d.jobs == len(waits[d.applicant_type])
        assert d.mean_h == pytest.approx(sum(waits[d.applicant_type]) / d.jobs)


def test_exports_carry_the_same_figures(world: World) -> None:
    from gpucenter.accounting.export import Format, render

    _random_usage(world, seed=5)
    with world.ctx.sessions.begin() as s:
        rows = reports.usage_report(s, ADMIN, [Dimension.GPU_TYPE], "2026-01", "2026-12")
    flat = [r.flat() for r in rows]
    assert json.loads(render(flat, Format.JSON)) == flat
    csv_text = render(flat, Format.CSV).decode("utf-8-sig").splitlines()
    assert (
        csv_text[0].split(",")[:2] == ["gpu_type", "gpu_hours"] and len(csv_text) == len(flat) + 1
    )
    with zipfile.ZipFile(io.BytesIO(render(flat, Format.XLSX))) as zf:
        sheet = zf.read("xl/worksheets/sheet1.xml").decode()
    assert all(str(r["gpu_type"]) in sheet for r in flat)


def test_reports_are_for_managers_and_admins_only(world: World) -> None:
    with world.ctx.sessions.begin() as s:
        with pytest.raises(PermissionDenied):
            reports.usage_report(s, world.centre.alice, [Dimension.MONTH], "2026-01", "2026-02")
        reports.usage_report(s, manager_of_everything(), [Dimension.MONTH], "2026-01", "2026-02")
        with pytest.raises(PermissionDenied):
            reports.supplier_statement(s, world.centre.alice, "2026-03")


def test_under_used_allocations_are_flagged_and_reclaimed(world: World) -> None:
    at = T0 + timedelta(days=60)  # about a quarter of the year gone, nearly nothing used
    _use(world, 2, alpha=False, when=T0)
    with world.ctx.sessions.begin() as s:
        flagged = {a.id: a for a in assess_use(s, ADMIN, at) if a.kind == "allocation"}
    assert flagged[world.beta_alloc].flagged and flagged[world.beta_alloc].used_gpu_hours == 2
    with world.ctx.sessions.begin() as s:
        result = reclaim(s, ADMIN, world.beta_alloc, 40.0, "idle since the award", at)
    assert result.new_budget_gpu_hours == pytest.approx(60.0)
