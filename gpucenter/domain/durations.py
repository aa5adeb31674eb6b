"""Durations as people write them: 90, 90s, 30m, 2h, 1d12h or H:MM:SS."""

from __future__ import annotations

import re

from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import msg

_UNITS = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str, field: str = "time") -> int:
    """Seconds in `text`; raise a ValidationError naming `field` if it is not a duration."""
    value = text.strip().lower()
    if value.isdigit():
        return int(value)
    if ":" in value:
        parts = value.split(":")
        if 2 <= len(parts) <= 3 and all(p.isdigit() for p in parts):
            nums = [int(p) for p in parts]
            while len(nums) < 3:
                nums.insert(0, 0)
            return nums[0] * 3600 + nums[1] * 60 + nums[2]
    match = _UNITS.match(value)
    if value and match and any(match.groups()):
        d, h, m, s = (int(g) if g else 0 for g in match.groups())
        return d * 86400 + h * 3600 + m * 60 + s
    raise ValidationError.about(field, msg("error.not_duration", text=repr(text)))
