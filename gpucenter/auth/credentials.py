"""API tokens and passwords.

Tokens are 256-bit random strings shown once; only their SHA-256 is stored, which is enough
for high-entropy secrets and lets a lookup use an index. Passwords use Argon2id with the
parameters pinned below, not the library's defaults: a library upgrade that changed its
defaults would otherwise change, silently, how every new password is stored.
"""

from __future__ import annotations

import hashlib
import secrets

from argon2 import Parameters, PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

TOKEN_PREFIX = "gpc_"

#: Argon2id as RFC 9106 recommends where memory is constrained (section 4, second option):
#: 3 passes over 64 MiB, 4 lanes, a 16-byte salt and a 32-byte tag. A login costs tens of
#: milliseconds of one core, and a guessing rig pays 64 MiB per guess in flight.
ARGON2_PARAMETERS = Parameters(
    type=Type.ID,
    version=19,
    salt_len=16,
    hash_len=32,
    time_cost=3,
    memory_cost=64 * 1024,  # KiB
    parallelism=4,
)
_hasher = PasswordHasher.from_parameters(ARGON2_PARAMETERS)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    if not stored_hash:
        # Spend comparable time so that unknown users are not revealed by timing.
        _hasher.hash(password)
        return False
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False
