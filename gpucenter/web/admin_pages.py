"""The centre admin's pages: users, organisations, centre-wide roles and the audit log.

Creating accounts and organisations needs the admin permission; granting roles goes
through `can_assign_role` as the API does; the audit log can be read and its hash chain
verified by anyone with audit access (site operators too), because a broken chain is
something every operator must be able to see.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from gpucenter.auth import passwords
from gpucenter.auth.permissions import CENTRE_ROLES, Caller, Permission, Role, can_assign_role
from gpucenter.domain.errors import Conflict, NotFound, PermissionDenied, ValidationError
from gpucenter.domain.messages import msg
from gpucenter.http.deps import Ctx, WebCaller
from gpucenter.http.permissions import requires_web
from gpucenter.services.context import AppContext
from gpucenter.services.identity import admin
from gpucenter.web import render
from gpucenter.web.i18n import N_
from gpucenter.web.programme_pages import (
    APPLICANT_TYPES,
    ROLES,
    FormFields,
    check_csrf,
    done,
    label,
    options,
)

router = APIRouter(include_in_schema=False)
_USERNAME = re.compile(r"^[a-z][a-z0-9_.-]{1,63}$")
_ROLE_VALUES = sorted(r.value for r in CENTRE_ROLES)


def _admin_page(
    ctx: AppContext,
    request: Request,
    caller: Caller,
    status: int = 200,
    user_form: render.FormState | None = None,
    org_form: render.FormState | None = None,
    role_form: render.FormState | None = None,
) -> HTMLResponse:
    found = admin.directory(ctx)
    users, orgs, roles = found.users, found.organisations, found.roles
    org_choices = [("", render.t(request, "No organisation"))] + [(o.name, o.name) for o in orgs]
    return render.page(
        request,
        ctx,
        "admin/index.html",
        caller,
        status,
        users=users,
        orgs=orgs,
        roles=roles,
        user_form=user_form or render.FormState(),
        org_form=org_form or render.FormState(),
        role_form=role_form or render.FormState(),
        org_choices=org_choices,
        kind_choices=options(request, APPLICANT_TYPES),
        role_choices=options(request, ROLES, _ROLE_VALUES),
        types=APPLICANT_TYPES,
        role_labels=ROLES,
        label=label,
    )


# The password policy's refusals (auth/passwords.py), as the portal words them.
PASSWORD_PROBLEMS = {
    passwords.Problem.TOO_SHORT: N_("Use a password of at least 12 characters."),
    passwords.Problem.TOO_LONG: N_("Use a password of at most 1,024 characters."),
    passwords.Problem.COMMON: N_(
        "This is one of the most common passwords (or one with digits or symbols added). "
        "Choose one nobody else would."
    ),
    passwords.Problem.REPEATED: N_(
        "This password repeats a short pattern or counts up or down. Choose another."
    ),
    passwords.Problem.USERNAME: N_("The password must not be the username."),
}


@router.get("/admin", response_class=HTMLResponse, dependencies=[requires_web(Permission.ADMIN)])
def admin_home(ctx: Ctx, request: Request, caller: WebCaller) -> HTMLResponse:
    return _admin_page(ctx, request, caller)


@router.post("/admin/users", dependencies=[requires_web(Permission.ADMIN)])
def create_user(ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields) -> Response:
    check_csrf(request, fields)
    form = render.FormState.of(
        {k: fields.get(k, "") for k in ("username", "display_name", "organisation")}
    )
    password = fields.get("password", "")
    if not _USERNAME.match(form.value("username")):
        form.error(
            "username",
            render.t(
                request,
                "Use 2-64 lowercase letters, digits, '.', '_' or '-', starting with a letter.",
            ),
        )
    if len(form.value("display_name")) > 200:
        form.error("display_name", render.t(request, "Keep the name under 200 characters."))
    refused = passwords.problem(password, form.value("username"))
    if refused is not None:
        form.error("password", render.t(request, PASSWORD_PROBLEMS[refused]))
    if form.ok:
        try:
            admin.create_user(
                ctx,
                caller,
                form.value("username"),
                organisation=form.value("organisation") or None,
                password=password,
                display_name=form.value("display_name").strip(),
            )
        except Conflict:
            form.error("username", render.t(request, "This username is taken."))
        except NotFound:
            form.error("organisation", render.t(request, "Choose an existing organisation."))
        except ValidationError as exc:
            form.error(exc.field, render.error_text(request, exc))
    if not form.ok:
        return _admin_page(ctx, request, caller, 422, user_form=form)
    return done("/admin", N_("The user was created."))


@router.post("/admin/organisations", dependencies=[requires_web(Permission.ADMIN)])
def create_organisation(
    ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields
) -> Response:
    check_csrf(request, fields)
    form = render.FormState.of({k: fields.get(k, "") for k in ("name", "kind")})
    name = form.value("name").strip()
    if not name or len(name) > 200:
        form.error(
            "name", render.t(request, "Give the organisation's name (up to 200 characters).")
        )
    if form.value("kind") not in APPLICANT_TYPES:
        form.error("kind", render.t(request, "Choose the kind of organisation."))
    if form.ok:
        try:
            admin.create_organisation(ctx, caller, name, form.value("kind"))
        except Conflict:
            form.error("name", render.t(request, "An organisation with this name exists."))
    if not form.ok:
        return _admin_page(ctx, request, caller, 422, org_form=form)
    return done("/admin", N_("The organisation was created."))


def _role_change(
    ctx: AppContext, request: Request, caller: Caller, fields: dict[str, str], grant: bool
) -> Response:
    check_csrf(request, fields)
    form = render.FormState.of({k: fields.get(k, "") for k in ("username", "role")})
    role = form.value("role")
    if role not in _ROLE_VALUES:
        form.error("role", render.t(request, "Choose a centre role."))
    elif not can_assign_role(caller, Role(role)):
        raise PermissionDenied.of(msg("error.cannot_grant_revoke_role", role=repr(role)))
    if form.ok:
        try:
            change = admin.grant_role if grant else admin.revoke_role
            change(ctx, caller, form.value("username"), role)
        except NotFound as exc:
            message = (
                N_("No user has this username.")
                if exc.kind == "user"
                else N_("This user does not hold this role.")
            )
            form.error("username", render.t(request, message))
    if not form.ok:
        return _admin_page(ctx, request, caller, 422, role_form=form)
    return done("/admin", N_("The role was granted.") if grant else N_("The role was revoked."))


@router.post("/admin/roles", dependencies=[requires_web(Permission.ROLES_MANAGE)])
def grant_role(ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields) -> Response:
    return _role_change(ctx, request, caller, fields, grant=True)


@router.post("/admin/roles/revoke", dependencies=[requires_web(Permission.ROLES_MANAGE)])
def revoke_role(ctx: Ctx, request: Request, caller: WebCaller, fields: FormFields) -> Response:
    return _role_change(ctx, request, caller, fields, grant=False)


@router.get(
    "/admin/audit", response_class=HTMLResponse, dependencies=[requires_web(Permission.AUDIT_READ)]
)
def audit_page(ctx: Ctx, request: Request, caller: WebCaller, verify: bool = False) -> HTMLResponse:
    """The newest entries; with ?verify=1, the whole hash chain is checked first."""
    result, entries = admin.audit_page(ctx, verify=verify, limit=100)
    return render.page(request, ctx, "admin/audit.html", caller, entries=entries, result=result)
