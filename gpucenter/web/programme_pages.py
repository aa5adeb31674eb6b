"""What the programme and admin pages share: labels for stored values, form reading, redirects.

Applicant types, states, strategic fields, rubric criteria and roles are stored as English
identifiers (`sme`, `under_review`, `need_for_gpus`); people must read them in their own
language, so every one of them has a marked label here and pages show `label(...)`, never
the raw value. The pages themselves live in apply_pages, review_pages, manage_pages and
admin_pages; each stays small and declares its own permissions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import RedirectResponse

from gpucenter.http import csrf
from gpucenter.web import render
from gpucenter.web.i18n import N_

# Longest value kept from any form field: a plan is long, everything else is short.
MAX_FIELD = 50_000

APPLICANT_TYPES: Mapping[str, str] = {
    "public_research_institute": N_("Public research institute"),
    "university": N_("University"),
    "startup": N_("Startup"),
    "sme": N_("Small or medium enterprise"),
    "large_enterprise": N_("Large enterprise"),
    "government": N_("Government agency"),
}

APPLICATION_STATES: Mapping[str, str] = {
    "draft": N_("Draft"),
    "submitted": N_("Awaiting review"),
    "under_review": N_("Under review"),
    "withdrawn": N_("Withdrawn"),
    "awarded": N_("Awarded"),
    "rejected": N_("Not selected"),
    "reserve": N_("On the reserve list"),
}

CALL_STATES: Mapping[str, str] = {
    "upcoming": N_("Opens soon"),
    "open": N_("Open"),
    "closed": N_("Closed, in review"),
    "decided": N_("Decided"),
}

STRATEGIC_FIELDS: Mapping[str, str] = {
    "semiconductors_displays": N_("Semiconductors and displays"),
    "secondary_batteries": N_("Secondary batteries"),
    "advanced_mobility": N_("Advanced mobility"),
    "next_generation_nuclear": N_("Next-generation nuclear energy"),
    "advanced_biotechnology": N_("Advanced biotechnology"),
    "aerospace_ocean": N_("Aerospace and ocean"),
    "hydrogen": N_("Hydrogen"),
    "cybersecurity": N_("Cybersecurity"),
    "artificial_intelligence": N_("Artificial intelligence"),
    "next_generation_communications": N_("Next-generation communications"),
    "advanced_robotics_manufacturing": N_("Advanced robotics and manufacturing"),
    "quantum": N_("Quantum"),
}

AWARD_KINDS: Mapping[str, str] = {
    "gpu_hours": N_("GPU-hours for batch jobs"),
    "lease": N_("Dedicated lease of GPUs"),
}

CRITERIA: Mapping[str, str] = {
    "scientific_merit": N_("Scientific merit"),
    "feasibility": N_("Feasibility"),
    "impact": N_("Impact"),
    "need_for_gpus": N_("Need for GPUs"),
}

ROLES: Mapping[str, str] = {
    "centre_admin": N_("Centre administrator"),
    "site_operator": N_("Site operator"),
    "programme_manager": N_("Programme manager"),
    "reviewer": N_("Reviewer"),
    "org_signatory": N_("Organisation signatory"),
}

# Korean provinces and metropolitan cities, as the region an applicant works in.
REGIONS: Mapping[str, str] = {
    "seoul": N_("Seoul"),
    "busan": N_("Busan"),
    "daegu": N_("Daegu"),
    "incheon": N_("Incheon"),
    "gwangju": N_("Gwangju"),
    "daejeon": N_("Daejeon"),
    "ulsan": N_("Ulsan"),
    "sejong": N_("Sejong"),
    "gyeonggi": N_("Gyeonggi"),
    "gangwon": N_("Gangwon"),
    "chungbuk": N_("North Chungcheong"),
    "chungnam": N_("South Chungcheong"),
    "jeonbuk": N_("North Jeolla"),
    "jeonnam": N_("South Jeolla"),
    "gyeongbuk": N_("North Gyeongsang"),
    "gyeongnam": N_("South Gyeongsang"),
    "jeju": N_("Jeju"),
}


def label(labels: Mapping[str, str], value: str) -> str:
    """The English msgid for a stored value (the template translates it); unknown values
    (a custom criterion or tag a manager defined) are shown as they are."""
    return labels.get(value, value)


def options(
    request: Request, labels: Mapping[str, str], values: list[str] | None = None
) -> list[tuple[str, str]]:
    """(value, translated label) pairs for a select, in the order given (all by default)."""
    chosen = list(labels) if values is None else values
    return [(v, render.t(request, label(labels, v))) for v in chosen]


async def _form_fields(request: Request) -> dict[str, str]:
    """The posted form as plain strings (uploads ignored, every value length-capped)."""
    form = await request.form()
    return {k: v[:MAX_FIELD] for k, v in form.items() if isinstance(v, str)}


FormFields = Annotated[dict[str, str], Depends(_form_fields)]


def check_csrf(request: Request, fields: Mapping[str, str]) -> None:
    csrf.check(request, fields.get(csrf.FIELD, ""))


def done(path: str, flash: str) -> RedirectResponse:
    """After a successful POST: 303 to `path`, with an English flash msgid to translate."""
    sep = "&" if "?" in path else "?"
    return RedirectResponse(f"{path}{sep}flash={quote(flash)}", status_code=303)


def number(text: str) -> float | None:
    """A number as typed (commas allowed as thousands separators), or None."""
    try:
        value = float(text.replace(",", "").strip())
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None
