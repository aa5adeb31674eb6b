"""Shared CLI plumbing: settings, errors as messages with a non-zero exit, output modes,
and the reader's language and time zone.

The language is the POSIX one (LC_ALL, LC_MESSAGES, LANG: `ko_KR.UTF-8` gives Korean):
scheduler reasons, errors and other service messages arrive from the API as codes with
parameters and are said here in that language. Times are shown in the user's own zone (TZ,
else the system's), with the zone's name, in the same format as the portal's pages.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, tzinfo
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo

import typer
from rich.console import Console

from gpucenter import locale
from gpucenter.auth.permissions import Caller
from gpucenter.cli.profiles import config_path
from gpucenter.client import ApiError, Client
from gpucenter.config import get_settings
from gpucenter.domain import durations
from gpucenter.domain.clock import SystemClock
from gpucenter.domain.errors import DomainError
from gpucenter.domain.messages import Message, msg

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")
_ERROR_WORD = {"en": "error", "ko": "오류"}


def lang() -> str:
    """The user's language from the environment (English unless LANG & co. say Korean)."""
    return locale.language_from_env(os.environ)


@cache
def local_zone() -> tzinfo:
    """The user's time zone: TZ when it names one, else the system's (/etc/localtime)."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (KeyError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError):
        return datetime.now().astimezone().tzinfo or UTC


def when(value: str | datetime | None) -> str:
    """An API time (ISO 8601 with an offset) in the user's zone and language, zone named."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    else:
        parsed = value
    return locale.format_instant(parsed, lang(), local_zone())


def tr(text: str) -> str:
    """One of the command line's own words (`locale/cli_texts.py`) in the user's language."""
    return locale.gettext(lang(), text)


def say(message: Message | Mapping[str, Any] | None, fallback: str = "") -> str:
    """A service message (or its JSON form from the API) in the user's language."""
    if message is not None and not isinstance(message, Message):
        message = Message.from_json(message)
    if message is None:
        return fallback
    return locale.render(message, lang(), local_zone())


def fail(message: str, code: int = 1) -> NoReturn:
    word = _ERROR_WORD.get(lang(), "error")
    err_console.print(f"[bold red]{word}:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn expected failures into one clear line and exit status 1 (2 for bad input)."""
    import httpx
    from sqlalchemy.exc import OperationalError

    try:
        yield
    except ApiError as exc:
        text = say(exc.message, exc.detail or exc.title)
        fail(text, 2 if exc.status in (400, 409, 422) else 1)
    except DomainError as exc:
        fail(say(exc.coded, str(exc)), 2)
    except httpx.ConnectError:
        fail(say(msg("error.cli_unreachable", url=get_settings().api_url)))
    except OperationalError as exc:
        fail(say(msg("error.cli_database", problem=str(exc.orig))))


def api_client() -> Client:
    """A client for the API with the signed-in token (the profile's, or GPUCENTER_TOKEN)."""
    settings = get_settings()
    if not settings.token:
        fail(say(msg("error.cli_not_signed_in", path=str(config_path()))))
    return Client(settings.api_url, settings.token, language=lang())


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
    token = settings.token
    with httpx.Client(
        base_url=settings.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as http:
        resp = http.request(method, path, **kw)
    if resp.status_code >= 400:
        try:
            body = resp.json()
        except ValueError:
            body = {}
        raise ApiError(
            resp.status_code,
            body.get("title", ""),
            body.get("detail", resp.text[:200]),
            Message.from_json(body),
        )
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
