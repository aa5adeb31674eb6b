"""English of the refusals of accounts, sign-in, accounting, sessions, sites and settings.

Why a module of its own: see `texts_programmes.py`. `ENGLISH` merges this dict; the Korean
is in `gpucenter/locale/ko/service_errors.po`."""

from __future__ import annotations

SERVICE_ERRORS: dict[str, str] = {}
