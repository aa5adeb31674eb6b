"""TOTP second factor (RFC 6238), as pure functions over a secret and a time.

A code is accepted for the current 30 s step or the one either side (clock drift), and only
for a step later than the last one accepted, so an overheard code cannot be replayed.
"""

from __future__ import annotations

import pyotp

STEP_S = 30
ISSUER = "gpucenter"


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str) -> str:
    """The otpauth:// URI an authenticator app reads (usually from a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def code_at(secret: str, at: float) -> str:
    return pyotp.TOTP(secret).at(at)


def accepted_step(secret: str, code: str, at: float, last_step: int) -> int | None:
    """The time step `code` belongs to if it is valid at `at` and newer than `last_step`."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    now_step = int(at // STEP_S)
    for step in (now_step, now_step - 1, now_step + 1):
        if step > last_step and pyotp.utils.strings_equal(totp.generate_otp(step), code):
            return step
    return None
