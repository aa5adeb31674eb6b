"""Accounting routes: budgets, notifications, ledger adjustments, rate cards, reports and
exports, use-it-or-lose-it, and the operators' /metrics. Parse, call a service, render.

Every route needs a signed-in caller; services/accounting_*.py decide who sees what (members
their own budgets, programme managers and centre admins the reports, operators the metrics).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field

from gpucenter.accounting.export import MEDIA_TYPES, Format, render
from gpucenter.accounting.rates import RateCard
from gpucenter.accounting.report import parse_dimensions
from gpucenter.auth.permissions import Permission
from gpucenter.http.deps import Ctx, CurrentCaller
from gpucenter.http.permissions import requires
from gpucenter.services.accounting import budgets, ledger, reports, useit
from gpucenter.services.ops import metrics

router = APIRouter(tags=["accounting"], dependencies=[requires(Permission.AUTHENTICATED)])
P = "/api/v1/accounting"
Month = Annotated[str, Query(pattern=r"^\d{4}-\d{2}$")]


def _export(records: list[dict[str, Any]], fmt: Format, name: str) -> Response:
    headers = {}
    if fmt is not Format.JSON:
        headers["Content-Disposition"] = f'attachment; filename="{name}.{fmt.value}"'
    return Response(render(records, fmt, name), media_type=MEDIA_TYPES[fmt], headers=headers)


@router.get(f"{P}/budgets")
def get_budgets(ctx: Ctx, caller: CurrentCaller) -> list[dict[str, Any]]:
    """Burn-down of the caller's allocations (all of them for admins and managers)."""
    with ctx.sessions.begin() as s:
        views = budgets.budgets(s, caller, ctx.now())
    return [
        {
            "allocation_id": v.allocation_id,
            "project": v.project,
            "state": v.state,
            "starts_at": v.starts_at,
            "ends_at": v.ends_at,
            "budget_gpu_hours": v.burn.budget_gpu_hours,
            "used_gpu_hours": v.burn.used_gpu_hours,
            "remaining_gpu_hours": v.burn.remaining_gpu_hours,
            "used_fraction": v.burn.used_fraction,
            "burn_rate_gpu_hours_per_day": v.burn.burn_rate_gpu_hours_per_day,
            "projected_exhaustion": v.burn.projected_exhaustion,
            "alerts": v.alerts,
        }
        for v in views
    ]


@router.get(f"{P}/notifications")
def get_notifications(
    ctx: Ctx, caller: CurrentCaller, unread: bool = False
) -> list[dict[str, Any]]:
    with ctx.sessions.begin() as s:
        rows = budgets.notifications(s, caller, unread)
        return [
            {
                "id": r.id,
                "kind": r.kind,
                "subject": r.subject,
                "body": r.body,
                "created_at": r.created_at,
                "read_at": r.read_at,
            }
            for r in rows
        ]


@router.post(f"{P}/notifications/{{notification_id}}/read", status_code=204)
def read_notification(ctx: Ctx, caller: CurrentCaller, notification_id: int) -> Response:
    with ctx.sessions.begin() as s:
        budgets.mark_read(s, caller, notification_id, ctx.now())
    return Response(status_code=204)


class AdjustmentIn(BaseModel):
    kind: ledger.AdjustmentKind
    reason: str = Field(max_length=2000)
    key: str = Field(default="", max_length=120)
    allocation_id: int | None = None
    to_allocation_id: int | None = None
    gpu_hours: float | None = None
    job_id: int | None = None
    run: int | None = None


@router.post(f"{P}/adjustments", status_code=201)
def post_adjustment(ctx: Ctx, caller: CurrentCaller, body: AdjustmentIn) -> list[dict[str, Any]]:
    """A refund of a job run, a credit or debit, or a transfer; idempotent by key/run."""
    now = ctx.now()
    with ctx.sessions.begin() as s:
        if body.kind is ledger.AdjustmentKind.REFUND:
            done = [ledger.refund_job_run(s, caller, body.job_id or 0, body.run, body.reason, now)]
        elif body.kind is ledger.AdjustmentKind.TRANSFER:
            done = list(
                ledger.transfer(
                    s,
                    caller,
                    body.allocation_id or 0,
                    body.to_allocation_id or 0,
                    body.gpu_hours or 0.0,
                    body.reason,
                    body.key,
                    now,
                )
            )
        else:
            done = [
                ledger.adjust(
                    s,
                    caller,
                    body.kind,
                    body.allocation_id or 0,
                    body.gpu_hours or 0.0,
                    body.reason,
                    body.key,
                    now,
                )
            ]
    return [asdict(d) for d in done]


class RateCardIn(BaseModel):
    fiscal_year: int
    gpu_type: str = Field(max_length=40)
    krw_per_gpu_hour: float
    billing_weight: float = 1.0


@router.get(f"{P}/rate-cards")
def get_rate_cards(ctx: Ctx, caller: CurrentCaller) -> list[dict[str, Any]]:
    with ctx.sessions.begin() as s:
        return [
            asdict(c)
            for c in sorted(ledger.rate_book(s).values(), key=lambda c: (c.fiscal_year, c.gpu_type))
        ]


@router.put(f"{P}/rate-cards")
def put_rate_card(ctx: Ctx, caller: CurrentCaller, body: RateCardIn) -> dict[str, Any]:
    card = RateCard(body.fiscal_year, body.gpu_type, body.krw_per_gpu_hour, body.billing_weight)
    with ctx.sessions.begin() as s:
        ledger.set_rate_card(s, caller, card, ctx.now())
    return asdict(card)


class EnforcementIn(BaseModel):
    on_exhausted: str = Field(max_length=20)


@router.put(f"{P}/programmes/{{programme_id}}/enforcement")
def put_enforcement(
    ctx: Ctx, caller: CurrentCaller, programme_id: int, body: EnforcementIn
) -> dict[str, Any]:
    with ctx.sessions.begin() as s:
        row = budgets.set_enforcement(s, caller, programme_id, body.on_exhausted, ctx.now())
        return {"programme_id": row.programme_id, "on_exhausted": row.on_exhausted}


@router.get(f"{P}/reports/usage", response_model=None)
def usage_report(
    ctx: Ctx,
    caller: CurrentCaller,
    first: Annotated[str, Query(alias="from", pattern=r"^\d{4}-\d{2}$")],
    last: Annotated[str, Query(alias="to", pattern=r"^\d{4}-\d{2}$")],
    by: str = "month,applicant_type",
    format: Format = Format.JSON,
) -> Response:
    """GPU-hours, normalised GPU-hours and KRW by any of: month, programme, call,
    applicant_type, organisation, strategic_field, site, gpu_type, project."""
    dims = parse_dimensions(by.split(","))
    with ctx.sessions.begin() as s:
        records = reports.usage_records(s, caller, dims, first, last)
    return _export(records, format, "usage")


@router.get(f"{P}/reports/supplier-statement", response_model=None)
def supplier_statement(
    ctx: Ctx, caller: CurrentCaller, month: Month, format: Format = Format.JSON
) -> Response:
    with ctx.sessions.begin() as s:
        records = reports.statement_records(s, caller, month)
    return _export(records, format, f"statement-{month}")


@router.get(f"{P}/reports/site-utilisation", response_model=None)
def site_utilisation(
    ctx: Ctx, caller: CurrentCaller, month: Month, format: Format = Format.JSON
) -> Response:
    with ctx.sessions.begin() as s:
        records = reports.utilisation_records(s, caller, month)
    return _export(records, format, f"utilisation-{month}")


@router.get(f"{P}/reports/queue-delay", response_model=None)
def queue_delay(
    ctx: Ctx, caller: CurrentCaller, month: Month, format: Format = Format.JSON
) -> Response:
    with ctx.sessions.begin() as s:
        records = reports.queue_delay_records(s, caller, month)
    return _export(records, format, f"queue-{month}")


@router.get(f"{P}/reports/shares", response_model=None)
def share_report(
    ctx: Ctx,
    caller: CurrentCaller,
    call_id: int,
    first: Annotated[str, Query(alias="from", pattern=r"^\d{4}-\d{2}$")],
    last: Annotated[str, Query(alias="to", pattern=r"^\d{4}-\d{2}$")],
    format: Format = Format.JSON,
) -> Response:
    """Delivered versus policy share of a call, per share rule and applicant type."""
    with ctx.sessions.begin() as s:
        records = reports.share_records(s, caller, call_id, first, last)
    return _export(records, format, "shares")


@router.get(f"{P}/use")
def use_assessment(
    ctx: Ctx, caller: CurrentCaller, at: datetime | None = None, flagged_only: bool = False
) -> list[dict[str, Any]]:
    """Use it or lose it: each active allocation and lease against its pro-rata plan."""
    with ctx.sessions.begin() as s:
        rows = useit.assess_use(s, caller, at or ctx.now())
    return [asdict(r) for r in rows if r.flagged or not flagged_only]


class ReclaimIn(BaseModel):
    allocation_id: int
    gpu_hours: float
    reason: str = Field(max_length=2000)
    offer_to_application: int | None = None


@router.post(f"{P}/reclaims", status_code=201)
def post_reclaim(ctx: Ctx, caller: CurrentCaller, body: ReclaimIn) -> dict[str, Any]:
    with ctx.sessions.begin() as s:
        done = useit.reclaim(
            s,
            caller,
            body.allocation_id,
            body.gpu_hours,
            body.reason,
            ctx.now(),
            body.offer_to_application,
        )
    return asdict(done)


@router.get(f"{P}/allocations/{{allocation_id}}/waitlist")
def waitlist(ctx: Ctx, caller: CurrentCaller, allocation_id: int) -> list[dict[str, Any]]:
    with ctx.sessions.begin() as s:
        return [
            {"id": a.id, "title": a.title, "kind": a.kind, "submitted_at": a.submitted_at}
            for a in useit.waitlisted(s, caller, allocation_id)
        ]


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus_metrics(ctx: Ctx, caller: CurrentCaller) -> PlainTextResponse:
    """Prometheus exposition; scrape with a site operator's API token."""
    reports.require_operator(caller)
    with ctx.sessions.begin() as s:
        body = metrics.render(s, ctx.now())
    return PlainTextResponse(body, media_type="text/plain; version=0.0.4")
