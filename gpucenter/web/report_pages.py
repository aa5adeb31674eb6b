"""The accounting reports in the browser: charts, tables and downloads.

The numbers come from services/accounting_reports.py, the same functions behind
/api/v1/accounting/reports/*, so the page, its CSV/JSON/XLSX downloads and the API always
agree. The API needs a bearer token; the downloads here use the session cookie, for a
person who reads the page and wants the file. Who sees what is the service's rule:
programme managers and centre admins the usage reports (managers only their programmes'),
site operators and centre admins the site statements.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from gpucenter import locale
from gpucenter.accounting.export import MEDIA_TYPES, Format, render
from gpucenter.accounting.rates import month_range
from gpucenter.accounting.report import Dimension, parse_dimensions
from gpucenter.auth.permissions import Caller, Permission, Role
from gpucenter.domain.errors import PermissionDenied
from gpucenter.domain.messages import msg
from gpucenter.http.deps import Ctx, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.services.accounting import reports
from gpucenter.web import charts, i18n
from gpucenter.web import render as pages
from gpucenter.web.i18n import N_

router = APIRouter(include_in_schema=False)
MonthQ = Annotated[str, Query(pattern=r"^\d{4}-\d{2}$")]
OptMonthQ = Annotated[str, Query(pattern=r"^(\d{4}-\d{2})?$")]

DIMENSION_LABELS = {
    Dimension.MONTH: N_("Month"),
    Dimension.PROGRAMME: N_("Programme"),
    Dimension.APPLICANT_TYPE: N_("Applicant type"),
    Dimension.ORGANISATION: N_("Organisation"),
    Dimension.GPU_TYPE: N_("GPU type"),
    Dimension.SITE: N_("Site"),
    Dimension.CALL: N_("Call"),
    Dimension.PROJECT: N_("Project"),
}


def sees_usage(caller: Caller) -> bool:
    return caller.is_centre_admin or any(r == Role.PROGRAMME_MANAGER for r, _ in caller.roles)


def sees_site(caller: Caller) -> bool:
    return caller.is_centre_admin or (Role.SITE_OPERATOR, 0) in caller.roles


def _default_range(ctx: Any) -> tuple[str, str]:
    now = ctx.now()
    last = reports.now_month(now)
    year, month = now.year, now.month - 11
    if month < 1:
        year, month = year - 1, month + 12
    return f"{year:04d}-{month:02d}", last


@router.get(
    "/reports", response_class=HTMLResponse, dependencies=[requires_web(Permission.USAGE_READ)]
)
def reports_page(
    ctx: Ctx,
    request: Request,
    caller: WebCaller,
    first: Annotated[str, Query(alias="from", pattern=r"^(\d{4}-\d{2})?$")] = "",
    last: Annotated[str, Query(alias="to", pattern=r"^(\d{4}-\d{2})?$")] = "",
    by: Annotated[str, Query(max_length=20)] = "month",
    month: OptMonthQ = "",
    call: int | None = None,
) -> HTMLResponse:
    usage_ok, site_ok = sees_usage(caller), sees_site(caller)
    if not (usage_ok or site_ok):
        raise PermissionDenied.of(msg("error.reports_for"))
    default_first, default_last = _default_range(ctx)
    first, last = first or default_first, last or default_last
    if first > last:
        first, last = last, first
    month = month or default_last
    dim = Dimension(by) if by in {d.value for d in DIMENSION_LABELS} else Dimension.MONTH
    values: dict[str, Any] = {}
    lang = i18n.language_of(request)
    with ctx.sessions.begin() as s:
        if usage_ok:
            rows = reports.usage_report(s, caller, [dim], first, last)
            if dim is Dimension.MONTH:  # every month of the range, empty ones too
                found = {r.key["month"]: r for r in rows}
                labels = month_range(first, last)
                hours = [found[m].gpu_hours if m in found else 0.0 for m in labels]
            else:
                labels = [r.key[dim.value] for r in rows]
                hours = [r.gpu_hours for r in rows]
            values["usage"] = rows
            if dim is Dimension.MONTH:  # "Jan 2026" / "2026년 1월", not "2026-01"
                labels = [locale.format_month(m, lang) for m in labels]
            values["usage_chart"] = charts.bar_chart(
                pages.t(request, "GPU-hours delivered by %(dim)s")
                % {"dim": pages.t(request, DIMENSION_LABELS[dim])},
                labels,
                [(pages.t(request, "GPU-hours"), hours)],
                lang=lang,
                y_title=pages.t(request, "GPU-hours"),
            )
            values["delays"] = reports.queue_delay(s, caller, month)
            values["calls"] = reports.report_calls(s, caller)
            if call is not None:
                values["shares"] = reports.share_report(s, caller, call, first, last)
        if site_ok:
            values["statement"] = reports.supplier_statement(s, caller, month)
            util = reports.site_utilisation(s, caller, month)
            values["utilisation"] = util
            values["utilisation_chart"] = charts.bar_chart(
                pages.t(request, "Delivered and available GPU-hours by site"),
                [u.site for u in util],
                [
                    (pages.t(request, "Delivered"), [u.delivered_gpu_hours for u in util]),
                    (pages.t(request, "Available"), [u.capacity_gpu_hours for u in util]),
                ],
                lang=lang,
                y_title=pages.t(request, "GPU-hours"),
            )
    return pages.page(
        request,
        ctx,
        "reports/index.html",
        caller,
        first=first,
        last=last,
        by=dim.value,
        month=month,
        call=call,
        dimensions=[(d.value, pages.t(request, label)) for d, label in DIMENSION_LABELS.items()],
        formats=[f.value for f in Format],
        usage_ok=usage_ok,
        site_ok=site_ok,
        **values,
    )


def _download(records: list[dict[str, Any]], fmt: Format, name: str) -> Response:
    """The file as the API makes it, always as an attachment (the page links to it)."""
    return Response(
        render(records, fmt, name),
        media_type=MEDIA_TYPES[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="{name}.{fmt.value}"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/reports/download/usage", dependencies=[requires_web(Permission.USAGE_READ)])
def download_usage(
    ctx: Ctx,
    caller: WebCaller,
    first: Annotated[str, Query(alias="from", pattern=r"^\d{4}-\d{2}$")],
    last: Annotated[str, Query(alias="to", pattern=r"^\d{4}-\d{2}$")],
    by: Annotated[str, Query(max_length=200)] = "month",
    format: Format = Format.CSV,
) -> Response:
    dims = parse_dimensions(by.split(","))
    with ctx.sessions.begin() as s:
        records = reports.usage_records(s, caller, dims, first, last)
    return _download(records, format, "usage")


@router.get("/reports/download/statement", dependencies=[requires_web(Permission.USAGE_READ)])
def download_statement(
    ctx: Ctx, caller: WebCaller, month: MonthQ, format: Format = Format.CSV
) -> Response:
    with ctx.sessions.begin() as s:
        records = reports.statement_records(s, caller, month)
    return _download(records, format, f"statement-{month}")


@router.get("/reports/download/utilisation", dependencies=[requires_web(Permission.USAGE_READ)])
def download_utilisation(
    ctx: Ctx, caller: WebCaller, month: MonthQ, format: Format = Format.CSV
) -> Response:
    with ctx.sessions.begin() as s:
        records = reports.utilisation_records(s, caller, month)
    return _download(records, format, f"utilisation-{month}")


@router.get("/reports/download/queue-delay", dependencies=[requires_web(Permission.USAGE_READ)])
def download_queue_delay(
    ctx: Ctx, caller: WebCaller, month: MonthQ, format: Format = Format.CSV
) -> Response:
    with ctx.sessions.begin() as s:
        records = reports.queue_delay_records(s, caller, month)
    return _download(records, format, f"queue-{month}")


@router.get("/reports/download/shares", dependencies=[requires_web(Permission.USAGE_READ)])
def download_shares(
    ctx: Ctx,
    caller: WebCaller,
    call: int,
    first: Annotated[str, Query(alias="from", pattern=r"^\d{4}-\d{2}$")],
    last: Annotated[str, Query(alias="to", pattern=r"^\d{4}-\d{2}$")],
    format: Format = Format.CSV,
) -> Response:
    with ctx.sessions.begin() as s:
        records = reports.share_records(s, caller, call, first, last)
    return _download(records, format, "shares")
