"""Find every string the portal shows and check that each has a translation.

Strings come from three places: the templates (`_()`, `{% trans %}`), the web code
(`N_()`, `render.t(request, ...)`, `i18n.gettext(lang, ...)`), and the service messages
rendered by `gpucenter.locale` (scheduler reasons, errors, health texts, notices, award
explanations: every code of `domain.messages.ENGLISH`, and the built-in job templates'
texts), whose translations live in `gpucenter/locale/<lang>/`. The test suite fails on any
string without a Korean translation, or a translation that drops a `%(name)s` placeholder.
Run `python -m gpucenter.web.catalogue_check ko` to print the missing entries as .po stubs
to paste into the catalogue of the area they belong to.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from babel.messages.extract import DEFAULT_KEYWORDS, extract

from gpucenter import locale
from gpucenter.locale.sources import all_texts
from gpucenter.web import i18n

WEB_DIR = Path(__file__).parent
TEMPLATE_OPTIONS = {
    "extensions": "jinja2.ext.i18n",
    "trimmed": "true",
    "trim_blocks": "true",
    "lstrip_blocks": "true",
}
PYTHON_KEYWORDS = {"N_": None, "t": (2,), "gettext": (2,), "ngettext": (2, 3)}
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


@dataclass(frozen=True, slots=True)
class Message:
    msgid: str | tuple[str, str]
    where: str


def _template_files() -> Iterator[Path]:
    yield from sorted((WEB_DIR / "templates").rglob("*.html"))


def _python_files() -> Iterator[Path]:
    yield from sorted(WEB_DIR.rglob("*.py"))


def messages() -> list[Message]:
    """Every translatable string of the portal, with the file and line it comes from."""
    found: list[Message] = []
    for path in _template_files():
        with path.open("rb") as handle:
            for line, text, _, _ in extract(
                "jinja2.ext:babel_extract", handle, DEFAULT_KEYWORDS, (), TEMPLATE_OPTIONS
            ):
                found.append(Message(_msgid(text), f"{path.relative_to(WEB_DIR)}:{line}"))
    for path in _python_files():
        with path.open("rb") as handle:
            for line, text, _, _ in extract("python", handle, PYTHON_KEYWORDS):
                found.append(Message(_msgid(text), f"{path.relative_to(WEB_DIR)}:{line}"))
    return [m for m in found if m.msgid]


def _msgid(text: str | tuple[str, ...]) -> str | tuple[str, str]:
    if isinstance(text, tuple):
        if len(text) >= 2 and text[0] and text[1]:
            return (text[0], text[1])
        return text[0] if text and text[0] else ""
    return text


def missing(lang: str) -> list[Message]:
    """Strings with no usable translation in `lang` (absent, empty or fuzzy)."""
    catalogue = i18n.catalogue(lang)
    seen: set[str | tuple[str, str]] = set()
    result = []
    for message in messages():
        if message.msgid in seen:
            continue
        seen.add(message.msgid)
        if message.msgid not in catalogue:
            result.append(message)
    return result


def service_missing(lang: str) -> list[Message]:
    """Service messages and template texts with no translation in `gpucenter/locale/<lang>`."""
    found = locale.catalogue(lang)
    return [
        Message(text, f"gpucenter/locale ({where})")
        for text, where in all_texts().items()
        if text not in found
    ]


def broken_placeholders(lang: str) -> list[str]:
    """Translations whose `%(name)s` placeholders differ from their msgid's."""
    problems = []
    merged: dict[str | tuple[str, str], str | tuple[str, ...]] = dict(i18n.catalogue(lang))
    merged.update(locale.catalogue(lang))
    for msgid, text in merged.items():
        source = " ".join(msgid) if isinstance(msgid, tuple) else msgid
        target = " ".join(text) if isinstance(text, tuple) else text
        if set(PLACEHOLDER.findall(source)) != set(PLACEHOLDER.findall(target)):
            problems.append(source)
    return problems


def _po_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def main(argv: list[str]) -> int:
    lang = argv[1] if len(argv) > 1 else "ko"
    gaps = missing(lang) + service_missing(lang)
    for message in gaps:
        print(f"#: {message.where}")
        if isinstance(message.msgid, tuple):
            print(f"msgid {_po_quote(message.msgid[0])}")
            print(f"msgid_plural {_po_quote(message.msgid[1])}")
            print('msgstr[0] ""\n')
        else:
            print(f"msgid {_po_quote(message.msgid)}")
            print('msgstr ""\n')
    for source in broken_placeholders(lang):
        print(f"# placeholders differ: {source}", file=sys.stderr)
    return 1 if gaps else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
