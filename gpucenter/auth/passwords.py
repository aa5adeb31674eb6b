"""The one password policy: every way a password is set (the admin CLI, the API, the portal,
a change of one's own password) asks `problem` and refuses what it names.

Why these rules and no others: length is what makes a password hard to guess, and the
passwords people actually pick first are the ones attackers try first (NIST SP 800-63B:
a minimum length, a list of known-bad passwords, no composition rules). Minimum 12
characters; not one of the 10,000 most common passwords (common_passwords.txt, its source
and licence at its top), nor one of them with digits or symbols stuck on either end
("password1234!"); not one short pattern repeated ("abcabcabcabc", "passwordpassword") nor
a count up or down ("123456789012"); not the username. At most 1,024 characters, so that
hashing one stays cheap.
"""

from __future__ import annotations

import itertools
import re
from enum import StrEnum
from functools import cache
from pathlib import Path

MIN_LENGTH = 12
MAX_LENGTH = 1024
_LIST = Path(__file__).with_name("common_passwords.txt")
# Digits, symbols and spaces people add around a word to pass a rule.
_AFFIX = re.compile(r"^[\W\d_]+|[\W\d_]+$")


class Problem(StrEnum):
    """What is wrong with a password; `message` words it for the CLI and the API."""

    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    COMMON = "common"
    REPEATED = "repeated"
    USERNAME = "username"

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Problem.TOO_SHORT: f"is too short: use at least {MIN_LENGTH} characters",
    Problem.TOO_LONG: f"is too long: use at most {MAX_LENGTH} characters",
    Problem.COMMON: "is one of the most common passwords (or one with digits or symbols "
    "added): choose one nobody else would",
    Problem.REPEATED: "repeats a short pattern or counts up or down ('abcabc...', "
    "'1234...'): choose another",
    Problem.USERNAME: "must not be the username",
}


@cache
def common_passwords() -> frozenset[str]:
    """The list, read once per process (the notice at its top ends at the first empty line)."""
    text = _LIST.read_text(encoding="utf-8")
    _, _, entries = text.partition("\n\n")
    return frozenset(line.casefold() for line in entries.splitlines() if line)


def _repeats_a_short_pattern(password: str) -> bool:
    """'aaaaaaaaaaaa', 'abcabcabcabc', 'passwordpassword': a unit of at most half the length
    repeated to fill it."""
    n = len(password)
    return any(
        n % size == 0 and password == password[:size] * (n // size) for size in range(1, n // 2 + 1)
    )


def _counts_up_or_down(password: str) -> bool:
    """'123456789012', 'abcdefghijkl', '987654321098': each character one after (or one
    before) the last, digits going round from 9 to 0."""

    def step(a: str, b: str) -> int:
        if a.isdigit() and b.isdigit():
            return (int(b) - int(a)) % 10
        return ord(b) - ord(a)

    steps = {step(a, b) for a, b in itertools.pairwise(password)}
    return steps in ({1}, {-1}, {9})


def problem(password: str, username: str = "") -> Problem | None:
    """The first thing wrong with `password` for the user `username`, or None when it is fine."""
    if len(password) < MIN_LENGTH:
        return Problem.TOO_SHORT
    if len(password) > MAX_LENGTH:
        return Problem.TOO_LONG
    folded = password.casefold()
    core = _AFFIX.sub("", folded)
    if username and username.casefold() in (folded, core):
        return Problem.USERNAME
    common = common_passwords()
    if folded in common or (core and core in common):
        return Problem.COMMON
    if _repeats_a_short_pattern(folded) or _counts_up_or_down(folded):
        return Problem.REPEATED
    return None


__all__ = ["MAX_LENGTH", "MIN_LENGTH", "Problem", "common_passwords", "problem"]
