"""Text that may cross the boundary: no NUL or other control characters.

A NUL byte cannot be stored by PostgreSQL, passed to a process (argv, environment) or
written into most files; other control characters rewrite terminals and logs. Accepting
them once made every later scheduling pass fail on one user's job. So every interface
refuses them where text comes in, naming the field; tab, line feed and carriage return (as in
CRLF line ends) are the only control characters allowed, in any field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import msg

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def control_character(text: str) -> str | None:
    """The first forbidden control character in `text`, as U+XXXX, or None."""
    found = _CONTROL.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"


def find_control(value: object, path: str = "") -> tuple[str, str] | None:
    """(field path, U+XXXX) of the first forbidden character in `value`, walking mappings
    (keys and values) and sequences; paths read like ``env.HF_TOKEN`` or ``tags[2]``."""
    if isinstance(value, str):
        char = control_character(value)
        return (path or "value", char) if char else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and (char := control_character(key)):
                return (f"{path}.<key>" if path else "<key>", char)
            if (found := find_control(item, name)) is not None:
                return found
        return None
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        for i, item in enumerate(value):
            if (found := find_control(item, f"{path}[{i}]")) is not None:
                return found
    return None


def refuse_control(value: object, path: str = "") -> None:
    """Raise `ValidationError` naming the field if `value` holds a forbidden character."""
    found = find_control(value, path)
    if found is not None:
        field, char = found
        raise ValidationError.about(field, msg("error.control_character", char=char))
