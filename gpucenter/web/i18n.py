"""Korean and English for the portal: catalogues, the request's language, and formatting.

English is the source language (msgids are English text); Korean comes from gettext
catalogues under `web/locale/ko/*.po`, one file per area of the portal so that people can
work on different pages without editing the same file. The catalogues are read with Babel
when the process starts; a test extracts every string from the templates and the web code
and fails when one has no Korean translation.

The language is chosen per request: the `gpc_lang` cookie set by the switch in the page
header, else the browser's Accept-Language, else English. Templates read it from their
render context (`lang`), so one Jinja environment serves both languages from any thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, format_percent
from fastapi import Request
from jinja2 import pass_context
from jinja2.runtime import Context

from gpucenter import locale
from gpucenter.domain.messages import Message

LANGUAGES = ("en", "ko")
DEFAULT_LANGUAGE = "en"
LANG_COOKIE = "gpc_lang"
LOCALE_DIR = Path(__file__).parent / "locale"
# Babel locale names for formatting.
_BABEL_LOCALE = {"en": "en_GB", "ko": "ko_KR"}


@cache
def catalogue(lang: str) -> Mapping[str | tuple[str, str], str | tuple[str, ...]]:
    """msgid -> translation for `lang`, merged from every .po file of that language.

    Entries marked fuzzy or left empty are not used: such a string shows in English, and
    the completeness test reports it.
    """
    merged: dict[str | tuple[str, str], str | tuple[str, ...]] = {}
    folder = LOCALE_DIR / lang
    if not folder.is_dir():
        return merged
    for path in sorted(folder.glob("*.po")):
        with path.open("rb") as handle:
            for message in read_po(handle, locale=lang):
                if not message.id or message.fuzzy:
                    continue
                key: str | tuple[str, str]
                if isinstance(message.id, str):
                    key = message.id
                else:
                    key = (str(message.id[0]), str(message.id[1]))
                text = message.string
                if isinstance(text, str) and text:
                    merged[key] = text
                elif isinstance(text, tuple | list) and all(text):
                    merged[key] = tuple(text)
    return merged


def N_(msgid: str) -> str:
    """Mark a string for translation where it is defined; it is translated where shown."""
    return msgid


def gettext(lang: str, msgid: str) -> str:
    """`msgid` in `lang`, or the English msgid itself when there is no translation."""
    if lang == DEFAULT_LANGUAGE:
        return msgid
    found = catalogue(lang).get(msgid)
    return found if isinstance(found, str) else msgid


def ngettext(lang: str, singular: str, plural: str, n: int) -> str:
    if lang != DEFAULT_LANGUAGE:
        found = catalogue(lang).get((singular, plural))
        if isinstance(found, tuple) and found:
            # Korean has a single plural form; other languages index by their rule.
            return found[0] if len(found) == 1 or n == 1 else found[1]
        found_single = catalogue(lang).get(singular)
        if isinstance(found_single, str):
            return found_single
    return singular if n == 1 else plural


def language_of(request: Request) -> str:
    """The request's language: the switch's cookie, else Accept-Language, else English."""
    chosen = request.cookies.get(LANG_COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    for part in request.headers.get("accept-language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return DEFAULT_LANGUAGE


# --- Jinja callables: the language comes from the render context, never from a global ---


def _lang(context: Context) -> str:
    lang = context.get("lang", DEFAULT_LANGUAGE)
    return lang if lang in LANGUAGES else DEFAULT_LANGUAGE


@pass_context
def jinja_gettext(context: Context, msgid: str) -> str:
    return gettext(_lang(context), msgid)


@pass_context
def jinja_ngettext(context: Context, singular: str, plural: str, n: int) -> str:
    return ngettext(_lang(context), singular, plural, n)


def display_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


@pass_context
def format_when(context: Context, value: datetime | date | None, style: str = "medium") -> str:
    """A date or time in the reader's language and the portal's zone, with the zone named:
    the one format of every page ("5 Dec 2026, 13:59 KST", "2026년 12월 5일 13:59 KST";
    see `gpucenter.locale.format_instant`). `style="date"` leaves the time out; the other
    styles are accepted for old templates and give the one format."""
    zone = context.get("display_tz") or ZoneInfo("UTC")
    return locale.format_instant(value, _lang(context), zone, with_time=style != "date")


@pass_context
def format_message(context: Context, message: Message | None, fallback: str = "") -> str:
    """A service message (a scheduler reason, an error) in the reader's language and the
    portal's zone; `fallback` (the English detail) when there is no message."""
    if message is None:
        return fallback
    zone = context.get("display_tz") or ZoneInfo("UTC")
    return locale.render(message, _lang(context), zone)


@pass_context
def format_coded(context: Context, data: object, fallback: str = "") -> str:
    """A message stored in its JSON form (an optimiser run's reasons and departures) in the
    reader's language; `fallback` (the stored English) for anything else, such as a run
    stored before its words were coded."""
    message = Message.from_json(data)
    return fallback if message is None else format_message(context, message, fallback)


@pass_context
def translate_text(context: Context, text: str | None) -> str:
    """A text that comes with the data (a template's title, a field label) in the reader's
    language, where `gpucenter/locale` has it; otherwise as it is."""
    return locale.gettext(_lang(context), text) if text else ""


def with_language(draw: Callable[..., Any]) -> Callable[..., Any]:
    """A chart function as a template global that is given the page's language (its
    number and date formats), so that templates call it as before: `bar_chart(title, ...)`."""

    @pass_context
    def call(context: Context, *args: Any, **kwargs: Any) -> Any:
        return draw(*args, lang=_lang(context), **kwargs)

    return call


def render_message(lang: str, message: Message | None, zone: ZoneInfo | None = None) -> str:
    """`format_message` for Python code (a flash, an error put next to a form field)."""
    return locale.render(message, lang, zone) if message is not None else ""


@pass_context
def format_number(context: Context, value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    pattern = "#,##0" + ("." + "0" * digits if digits > 0 else "")
    return format_decimal(value, format=pattern, locale=_BABEL_LOCALE[_lang(context)])


@pass_context
def format_krw(context: Context, value: float | int | None) -> str:
    """Korean won, without fractions (the won has no minor unit in use)."""
    if value is None:
        return "—"
    return format_currency(
        round(value), "KRW", locale=_BABEL_LOCALE[_lang(context)], currency_digits=True
    )


@pass_context
def format_share(context: Context, value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    pattern = "#,##0" + ("." + "0" * digits if digits > 0 else "") + "%"
    return format_percent(value, format=pattern, locale=_BABEL_LOCALE[_lang(context)])


def install(env: Any) -> None:
    """Teach a Jinja environment our gettext, plural forms and formatting filters."""
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(jinja_gettext, jinja_ngettext, newstyle=True)
    env.filters["when"] = format_when
    env.filters["message"] = format_message
    env.filters["coded"] = format_coded
    env.filters["text"] = translate_text
    env.filters["number"] = format_number
    env.filters["krw"] = format_krw
    env.filters["share"] = format_share
