"""English of the refusals of programmes, calls, applications, reviews and awards.

Why a module of its own: `domain/messages.py` holds the job path's and the scheduler's
texts; the award life cycle has many refusals of its own (deadlines, states, shares), and
keeping them here keeps each catalogue file short. `ENGLISH` merges this dict; the Korean
is in `gpucenter/locale/ko/programme_errors.po`."""

from __future__ import annotations

PROGRAMME_ERRORS: dict[str, str] = {}
