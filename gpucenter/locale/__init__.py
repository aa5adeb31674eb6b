"""Korean and English below the interfaces: message catalogues and the one way times and
numbers are written, shared by the portal, the API, the CLI and e-mail.

Why here and not in `web/`: a scheduler reason or an error is rendered by the portal in the
reader's language, by the CLI in the language of `LANG`/`LC_MESSAGES`, and by the services
in e-mail; all of them import this package, which imports only the domain and Babel.

Catalogues are gettext files under `gpucenter/locale/<lang>/*.po` whose msgids are the
English texts of `domain.messages.ENGLISH` (and of the built-in job templates). The
portal's own strings stay in `web/locale/`; `python -m gpucenter.web.catalogue_check ko`
checks both.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, tzinfo
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_skeleton, format_time
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent

from gpucenter.domain.messages import ENGLISH, At, Message, Num, Param, fill

LANGUAGES = ("en", "ko")
DEFAULT_LANGUAGE = "en"
LOCALE_DIR = Path(__file__).parent
BABEL_LOCALE = {"en": "en_GB", "ko": "ko_KR"}

__all__ = [
    "BABEL_LOCALE",
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "catalogue",
    "format_instant",
    "format_month",
    "format_num",
    "gettext",
    "language_from_env",
    "render",
    "zone_named",
]


@cache
def catalogue(lang: str) -> Mapping[str, str]:
    """msgid -> translation for `lang` from every .po file in its folder; fuzzy and empty
    entries are left out (the English shows, and the catalogue check reports it)."""
    merged: dict[str, str] = {}
    folder = LOCALE_DIR / lang
    if not folder.is_dir():
        return merged
    for path in sorted(folder.glob("*.po")):
        with path.open("rb") as handle:
            for message in read_po(handle, locale=lang):
                usable = message.id and not message.fuzzy and isinstance(message.id, str)
                if usable and isinstance(message.string, str) and message.string:
                    merged[str(message.id)] = message.string
    return merged


def gettext(lang: str, msgid: str) -> str:
    if lang == DEFAULT_LANGUAGE:
        return msgid
    return catalogue(lang).get(msgid, msgid)


def language_from_env(environ: Mapping[str, str]) -> str:
    """The language a command-line user asked for, the POSIX way: LC_ALL, else
    LC_MESSAGES, else LANG (`ko_KR.UTF-8` -> "ko"); English otherwise."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(name, "")
        if value:
            code = value.split(".")[0].split("_")[0].lower()
            return code if code in LANGUAGES else DEFAULT_LANGUAGE
    return DEFAULT_LANGUAGE


def zone_named(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


def format_instant(
    value: datetime | date | None, lang: str, zone: tzinfo | None, with_time: bool = True
) -> str:
    """THE way a date or time is written for people, in every language: the date with the
    month's name from CLDR ("5 Dec 2026", "2026년 12월 5일"), then hours and minutes and the
    zone's abbreviation ("13:59 KST"). A naive datetime is taken as UTC; '—' when unknown."""
    if value is None:
        return "—"
    locale = BABEL_LOCALE.get(lang, BABEL_LOCALE[DEFAULT_LANGUAGE])
    if not isinstance(value, datetime):
        return format_skeleton("yMMMd", value, locale=locale)
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    local = aware.astimezone(zone or UTC)
    day = format_date(local, format=_date_pattern(locale), locale=locale)
    if not with_time:
        return day
    clock = format_time(local, format="HH:mm", locale=locale)
    return f"{day}{_glue(locale)}{clock} {local.tzname() or ''}".rstrip()


@cache
def _date_pattern(locale: str) -> str:
    pattern = Locale.parse(locale).datetime_skeletons["yMMMd"]
    return str(getattr(pattern, "pattern", pattern))


@cache
def _glue(locale: str) -> str:
    """What CLDR puts between a date and a time in this locale (", " in English)."""
    glue = str(Locale.parse(locale).datetime_formats["medium"])
    middle = glue.replace("{1}", "\x00").replace("{0}", "\x00").split("\x00")
    return middle[1] if len(middle) == 3 else " "


def format_month(month: str, lang: str) -> str:
    """A month written "YYYY-MM" as people read it: "Jan 2026", "2026년 1월" (CLDR)."""
    try:
        year, number = (int(part) for part in month.split("-"))
        first = date(year, number, 1)
    except ValueError:
        return month
    locale = BABEL_LOCALE.get(lang, BABEL_LOCALE[DEFAULT_LANGUAGE])
    return format_skeleton("yMMM", first, locale=locale)


def format_num(value: float, lang: str, digits: int = 1, percent: bool = False) -> str:
    locale = BABEL_LOCALE.get(lang, BABEL_LOCALE[DEFAULT_LANGUAGE])
    pattern = "#,##0" + ("." + "0" * digits if digits > 0 else "")
    if percent:
        return format_percent(value, format=pattern + "%", locale=locale)
    return format_decimal(value, format=pattern, locale=locale)


def render(message: Message | None, lang: str, zone: tzinfo | None = None) -> str:
    """`message` in `lang`, its instants in `zone` (UTC when None). An unknown code renders
    as the code itself, so that a reader never fails on a newer server's message."""
    if message is None:
        return ""
    english = ENGLISH.get(message.code)
    if english is None:
        return message.code
    template = gettext(lang, english)
    return fill(template, {k: _value(v, lang, zone) for k, v in message.params})


def _value(value: Param, lang: str, zone: tzinfo | None) -> str:
    if isinstance(value, At):
        try:
            when = datetime.fromtimestamp(value.t, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return value.iso()
        return format_instant(when, lang, zone)
    if isinstance(value, Message):
        return render(value, lang, zone)
    if isinstance(value, Num):
        return format_num(value.value, lang, value.digits, value.percent)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return format_num(value, lang, 1)
    if isinstance(value, int):
        return format_num(value, lang, 0)
    return gettext(lang, value) if lang != DEFAULT_LANGUAGE and value in _WORDS else value


# Words that arrive as parameters (a job state, an applicant type) and have a translation.
_WORDS = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "RUNNING", "PENDING"})
