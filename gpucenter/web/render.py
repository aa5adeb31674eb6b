"""Rendering a portal page: one Jinja environment, the request's language and user, CSRF.

Every page goes through `page()`, so every page gets the same things without asking: the
CSRF token for its forms, the reader's language and time zone, who is signed in and which
parts of the portal their roles open (the navigation shows only those), and `no-store`
caching. Forms keep what the user typed and show errors next to the field they concern
through `FormState`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from gpucenter.auth.permissions import Caller, Role
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import Message
from gpucenter.http import csrf
from gpucenter.services.context import AppContext
from gpucenter.web import charts, flashes, i18n
from gpucenter.web.i18n import N_

TEMPLATES = Path(__file__).parent / "templates"

env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
env.policies["ext.i18n.trimmed"] = True
i18n.install(env)
env.globals["line_chart"] = i18n.with_language(charts.line_chart)
env.globals["bar_chart"] = i18n.with_language(charts.bar_chart)
env.globals["heat_cells"] = charts.heat_cells


@dataclass(frozen=True, slots=True)
class NavItem:
    href: str
    label: str  # an English msgid, translated in the template


def navigation(caller: Caller | None) -> list[NavItem]:
    """The portal's parts this caller may open; a link they cannot use is not shown."""
    if caller is None:
        return []
    items = [
        NavItem("/", N_("Dashboard")),
        NavItem("/programmes", N_("Programmes")),
        NavItem("/applications", N_("My applications")),
        NavItem("/awards", N_("My awards")),
        NavItem("/jobs", N_("Jobs")),
        NavItem("/sessions", N_("Sessions")),
        NavItem("/projects", N_("Projects")),
    ]
    if caller.has_role(Role.REVIEWER) or any(r == Role.REVIEWER for r, _ in caller.roles):
        items.append(NavItem("/reviews", N_("Reviews")))
    if caller.has_role(Role.PROGRAMME_MANAGER) or any(
        r == Role.PROGRAMME_MANAGER for r, _ in caller.roles
    ):
        items.append(NavItem("/manage", N_("Manage programmes")))
    if caller.has_role(Role.SITE_OPERATOR):
        items.append(NavItem("/ops", N_("Operations")))
    if caller.has_role(Role.PROGRAMME_MANAGER) or caller.has_role(Role.SITE_OPERATOR):
        items.append(NavItem("/reports", N_("Reports")))
    if caller.is_centre_admin:
        items.append(NavItem("/admin", N_("Administration")))
    return items


@dataclass
class FormState:
    """What the user typed and what was wrong with it, field by field.

    A page that rejects a form renders it again from this, so nothing typed is lost and
    each message sits next to its field (and in a summary at the top for screen readers).
    """

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> FormState:
        return cls({k: "" if v is None else str(v) for k, v in values.items()})

    def error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, message)

    @property
    def ok(self) -> bool:
        return not self.errors

    def value(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)


def t(request: Request, msgid: str) -> str:
    """Translate a message produced in Python (errors, flashes) for this request."""
    return i18n.gettext(i18n.language_of(request), msgid)


def error_text(request: Request, exc: Exception, *, beside_field: bool = True) -> str:
    """A refusal (a domain error) said in this request's language, for a form or a page.

    Why: services raise errors that carry a message code (`DomainError.coded`) so that each
    reader gets their own language; gettext on the English text would find no entry, since
    the English has its parameters filled in. A `ValidationError` is shown next to its field,
    so the field's name is left out (the inner problem only) unless `beside_field` is False
    (an error page, where nothing else names the field); an error without a code falls back
    to the catalogue lookup of its English text."""
    coded = getattr(exc, "coded", None)
    lang = i18n.language_of(request)
    zone = i18n.display_zone(request.app.state.ctx.settings.display_timezone)
    if isinstance(exc, ValidationError) and beside_field:
        inner = coded.values.get("problem") if coded is not None else None
        if isinstance(inner, Message):
            return i18n.render_message(lang, inner, zone)
        return t(request, exc.message)
    if isinstance(exc, ValidationError) and coded is None:
        return f"{exc.field}: {t(request, exc.message)}"
    if coded is not None:
        return i18n.render_message(lang, coded, zone)
    return t(request, str(exc))


def page(
    request: Request,
    ctx: AppContext,
    name: str,
    caller: Caller | None = None,
    status: int = 200,
    **values: object,
) -> HTMLResponse:
    """Render template `name` for this request, in its language, with its CSRF token."""
    token = csrf.token_for(request)
    lang = i18n.language_of(request)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    html = env.get_template(name).render(
        csrf=token,
        lang=lang,
        languages=i18n.LANGUAGES,
        display_tz=i18n.display_zone(ctx.settings.display_timezone),
        caller=caller,
        username=caller.username if caller else "",
        nav=navigation(caller),
        path=request.url.path,
        here=quote(here, safe=""),
        flash=flashes.shown(request.query_params.get("flash", "")),
        **values,
    )
    response = HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
    csrf.set_cookie(response, token, ctx.settings.cookie_secure)
    return response


def wants_html(request: Request) -> bool:
    """A browser asking for a portal page (not the API, metrics or a health probe)."""
    path = request.url.path
    if path.startswith(("/api/", "/metrics", "/healthz", "/readyz", "/static/")):
        return False
    return "text/html" in request.headers.get("accept", "")
