"""Every text this package translates, for the catalogue check: the message codes' English
(`domain.messages.ENGLISH`), the words passed as parameters, and the built-in job templates'
titles, descriptions and field labels (read from `gpucenter/demo/templates/*.yaml`), and the
command line's own words (`cli_texts.py`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from gpucenter.domain.messages import ENGLISH
from gpucenter.locale.cli_texts import CLI_TEXTS

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "demo" / "templates"


def template_texts() -> list[str]:
    """Titles, descriptions and field labels of the shipped templates, in file order."""
    found: list[str] = []
    for path in sorted(TEMPLATES_DIR.glob("*.yaml")):
        body = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for key in ("title", "description"):
            if body.get(key):
                found.append(str(body[key]))
        for item in body.get("fields") or []:
            if item.get("label"):
                found.append(str(item["label"]))
    return list(dict.fromkeys(found))


def all_texts() -> dict[str, str]:
    """msgid -> where it comes from, for every string this package must translate."""
    texts = {text: f"message {code}" for code, text in ENGLISH.items()}
    for text in template_texts():
        texts.setdefault(text, "job template")
    for text in CLI_TEXTS:
        texts.setdefault(text, "command line")
    return texts


__all__ = ["all_texts", "template_texts"]
