"""Shared CLI plumbing: settings, errors as messages with a non-zero exit, output modes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from gpucenter.auth.permissions import Caller
from gpucenter.client import ApiError, Client
from gpucenter.config import Settings, get_settings
from gpucenter.domain import durations
from gpucenter.domain.clock import SystemClock
from gpucenter.domain.errors import DomainError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn expected failures into one clear line and exit status 1 (2 for bad input)."""
    import httpx
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except ApiError as exc:
        fail(exc.detail or exc.title, 2 if exc.status in (400, 409, 422) else 1)
    except DomainError as exc:
        fail(str(exc), 2)
    except httpx.ConnectError:
        fail(f"cannot reach the gpucenter server at {get_settings().api_url}; is it running?")
    except OperationalError as exc:
        fail(f"cannot use the database: {exc.orig}; check GPUCENTER_DATABASE_URL")


def token_file(settings: Settings) -> Path:
    return settings.var_dir / "cli-token"


def api_client() -> Client:
    settings = get_settings()
    token = settings.token
    path = token_file(settings)
    if not token and path.exists():
        token = path.read_text().strip()
    if not token:
        fail("not signed in: run 'gpucenter login' or set GPUCENTER_TOKEN")
    return Client(settings.api_url, token)


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        render(data)


def parse_duration(text: str) -> int:
    """Seconds from '90', '90s', '30m', '2h', '1d12h' or 'H:MM:SS'."""
    try:
        return durations.parse_duration(text)
    except DomainError as exc:
        raise typer.BadParameter(str(exc)) from None


def api_call(method: str, path: str, **kw: Any) -> Any:
    """One authenticated request to the API with the signed-in token; problem+json errors
    become an ApiError (and so a clear message under `friendly_errors`)."""
    import httpx

    settings = get_settings()
    client = api_client()
    client.close()
    token = settings.token or (token_file(settings).read_text().strip())
    with httpx.Client(
        base_url=settings.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        resp = http.request(method, path, **kw)
    if resp.status_code >= 400:
        try:
            body = resp.json()
        except ValueError:
            body = {}
        raise ApiError(resp.status_code, body.get("title", ""), body.get("detail", resp.text[:200]))
    return resp.json() if resp.content else None


AsUser = Annotated[str, typer.Option("--as", help="the user whose roles apply")]


def utc_now() -> datetime:
    """The wall clock, as the timezone-aware time the services take."""
    return datetime.fromtimestamp(SystemClock().now(), tz=UTC)


def run_as(username: str, action: Callable[[Session, Caller], T]) -> T:
    """Run `action` in one transaction as `username` (roles and all), on the server host."""
    from gpucenter.persistence.db import make_engine, session_factory
    from gpucenter.services.identity.signin import caller_named

    engine = make_engine(get_settings().effective_database_url)
    try:
        with friendly_errors(), session_factory(engine).begin() as s:
            return action(s, caller_named(s, username))
    finally:
        engine.dispose()
    raise AssertionError("unreachable")  # friendly_errors exits on failure
