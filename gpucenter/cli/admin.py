"""`gpucenter admin ...`: the centre admin's commands, run on the server host against the DB."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from gpucenter.cli.common import console, friendly_errors
from gpucenter.cli.common import utc_now as _now
from gpucenter.config import get_settings
from gpucenter.domain.messages import msg

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

# The database layers are imported inside the commands: `gpucenter job ...` never needs them,
# and a CLI that starts in a fraction of a second is part of being easy to use.

app = typer.Typer(
    help="Organisations, users, projects and allocations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
org_app = typer.Typer(help="Organisations.", no_args_is_help=True, pretty_exceptions_enable=False)
user_app = typer.Typer(help="Users.", no_args_is_help=True, pretty_exceptions_enable=False)
project_app = typer.Typer(
    help="Projects and members.", no_args_is_help=True, pretty_exceptions_enable=False
)
template_app = typer.Typer(
    help="Job templates members can use.", no_args_is_help=True, pretty_exceptions_enable=False
)
alloc_app = typer.Typer(
    help="Allocations of GPU-hours.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.add_typer(org_app, name="org")
app.add_typer(user_app, name="user")
app.add_typer(project_app, name="project")
app.add_typer(alloc_app, name="alloc")
app.add_typer(template_app, name="template")
role_app = typer.Typer(
    help="Centre-wide roles: centre_admin, site_operator, programme_manager.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(role_app, name="role")
T = TypeVar("T")


def _accounts() -> Any:
    from gpucenter.services.identity import accounts

    return accounts


@contextmanager
def _db() -> Iterator[Session]:
    from gpucenter.persistence.db import make_engine, session_factory

    engine = make_engine(get_settings().effective_database_url)
    try:
        with friendly_errors(), session_factory(engine).begin() as s:
            yield s
    finally:
        engine.dispose()


def _run(action: Callable[[Session], T]) -> T:
    with _db() as s:
        return action(s)


@app.command("rotate-env-key")
def rotate_env_key() -> None:
    """Take a new key into use for sealing job environments (issue 17); older keys stay in
    the ring (`<var>/secrets/env-keys.json`), so jobs sealed under them still start. The
    change is recorded in the audit log. Run on the server host, as the server's user."""
    from gpucenter.persistence.sealed_env import EnvKeys
    from gpucenter.services.identity import audit

    keys = EnvKeys.under(get_settings().var_dir)
    before = keys.cipher()[0]

    def record(s: Session) -> str:
        key_id = keys.rotate()
        details = {"from": before, "to": key_id}
        audit.log(s, "job_env.key_rotated", audit.SYSTEM, _now(), "env_key", key_id, details)
        return key_id

    console.print(f"environment key {_run(record)} in use", highlight=False)


@org_app.command("create")
def org_create(
    name: str,
    kind: Annotated[
        str, typer.Option(help="university, startup, sme, public_research_institute, ...")
    ],
) -> None:
    row = _run(lambda s: _accounts().create_organisation(s, name, kind, _now(), by=_cli_actor()))
    console.print(f"organisation {row.id} {row.name!r} ({row.kind}) created", highlight=False)


@user_app.command("create")
def user_create(
    username: str,
    org: Annotated[str | None, typer.Option("--org")] = None,
    admin: Annotated[bool, typer.Option("--admin")] = False,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            help="for sign-in: at least 12 characters, not a common password, not the username",
        ),
    ] = None,
) -> None:
    """Create a user; prints an API token once (it is stored only hashed)."""
    new = _run(
        lambda s: _accounts().create_user(
            s,
            username,
            _now(),
            organisation=org,
            password=password,
            is_admin=admin,
            by=_cli_actor(),
        )
    )
    console.print(f"user {new.user.id} {username!r} created", highlight=False)
    console.print(f"API token (shown once): {new.token}", highlight=False, soft_wrap=True)


@user_app.command("set-password")
def user_set_password(
    username: str,
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            help="at least 12 characters, not a common password, not the username",
        ),
    ],
) -> None:
    """Give a user a new password (the policy applies; the change is audited)."""
    _run(lambda s: _accounts().set_password(s, username, password, _now(), by=_cli_actor()))
    console.print(f"password of {username!r} changed", highlight=False)


@user_app.command("unlock")
def user_unlock(username: str) -> None:
    """Clear a user's sign-in locks and failure counts (every address's, and the
    username-wide throttle): for an owner locked out by their own mistakes."""
    from gpucenter.services.identity import ratelimit

    cleared = _run(lambda s: ratelimit.unlock(s, username))
    console.print(f"{username!r}: {cleared} sign-in limit(s) cleared", highlight=False)


@project_app.command("create")
def project_create(
    name: str,
    org: Annotated[str, typer.Option("--org")],
    member: Annotated[list[str] | None, typer.Option("--member", help="username")] = None,
    title: Annotated[str, typer.Option("--title")] = "",
) -> None:
    def action(s: Session) -> int:
        row = _accounts().create_project(s, name, org, _now(), title, by=_cli_actor())
        for username in member or []:
            _accounts().add_member(s, name, username, by=_cli_actor())
        return int(row.id)

    pid = _run(action)
    console.print(f"project {pid} {name!r} created", highlight=False)


@project_app.command("add-member")
def project_add_member(
    project: str, username: str, role: Annotated[str, typer.Option("--role")] = "member"
) -> None:
    _run(lambda s: _accounts().add_member(s, project, username, role, by=_cli_actor()))
    console.print(f"{username} is now a {role} of {project}", highlight=False)


@alloc_app.command("create")
def alloc_create(
    project: str,
    gpu_hours: Annotated[float, typer.Option("--gpu-hours")],
    days: Annotated[int, typer.Option("--days")] = 365,
) -> None:
    row = _run(
        lambda s: _accounts().create_allocation(
            s, project, gpu_hours, _now(), days=days, by=_cli_actor()
        )
    )
    console.print(
        f"allocation {row.id}: {gpu_hours:g} GPU-hours for {project} until {row.ends_at:%Y-%m-%d}",
        highlight=False,
    )


@template_app.command("publish")
def template_publish(path: Path) -> None:
    """Publish a template from a YAML file (replaces one of the same name)."""
    import yaml

    from gpucenter.domain.errors import ValidationError
    from gpucenter.services.jobs import templates

    try:
        body = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        with friendly_errors():
            raise ValidationError.about(
                "file", msg("error.cannot_read_file", path=str(path), problem=str(exc))
            ) from None
        return
    template = _run(lambda s: templates.publish(s, body, _now(), None))
    console.print(f"template {template.name!r} published: {template.title}", highlight=False)


def _cli_actor() -> Any:
    """Who the admin CLI acts as in the audit log: the operating-system account on the host."""
    import getpass

    from gpucenter.services.identity.audit import Actor

    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return Actor(None, f"cli:{name}"[:100])


@role_app.command("grant")
def role_grant(username: str, role: str) -> None:
    """Give USERNAME a centre-wide ROLE."""
    _run(lambda s: _accounts().grant_role(s, username, role, _now(), by=_cli_actor()))
    console.print(f"{username} now holds {role}", highlight=False)


@role_app.command("revoke")
def role_revoke(username: str, role: str) -> None:
    """Take a centre-wide ROLE from USERNAME."""
    _run(lambda s: _accounts().revoke_role(s, username, role, _now(), by=_cli_actor()))
    console.print(f"{username} no longer holds {role}", highlight=False)


@role_app.command("list")
def role_list() -> None:
    from rich.table import Table

    rows = _run(lambda s: _accounts().centre_roles(s))
    table = Table("User", "Role")
    for username, role in rows:
        table.add_row(username, role)
    console.print(table)


@user_app.command("link-sso")
def user_link_sso(
    username: str,
    subject: Annotated[str, typer.Option("--subject", help="the provider's 'sub' claim")],
    issuer: Annotated[str | None, typer.Option("--issuer")] = None,
) -> None:
    """Let an identity at the single sign-on provider sign in as USERNAME."""
    from gpucenter.services.identity import oidc

    iss = issuer or get_settings().oidc_issuer
    if not iss:
        console.print("give --issuer or set GPUCENTER_OIDC_ISSUER")
        raise typer.Exit(2)
    _run(lambda s: oidc.link(s, username, iss, subject, _now(), by=_cli_actor()))
    console.print(f"{subject} at {iss} signs in as {username}", highlight=False)
