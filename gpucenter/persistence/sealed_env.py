"""Job environments sealed at rest: AES-256-GCM under a key kept outside the database.

Why: a job's environment carries its owner's secrets (an `HF_TOKEN`, a W&B key); in the
`jobs.env` column they were readable by anyone who could read the database or a backup of
it (issue 17). Now the column holds the variable *names* in clear and their values in one
sealed token, so that lists and admin views can still say which variables a job sets:

    {"$sealed": "g1.<key id>.<base64url(nonce | ciphertext | tag)>", "$names": ["A", "B"]}

Beside them may stand clear entries gpucenter sets itself (`GPUCENTER_ARRAY_TASK_ID`); a
stored env without `$sealed` (an older row, or an empty env) is read as it is.

The associated data binds a token to its owner and its names: a token copied into another
user's job, or names edited beside it, fail to open (AESGCM's tag), so the job fails
instead of running with somebody else's secrets. Each token names its key; the key ring
(like the audit log's, `audit_keys`) is a file only the server reads (0600 in a 0700
directory) holding every key ever used, the last one current: rotation appends a key,
and old rows still open.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gpucenter.persistence.private_files import create_private, replace_private

__all__ = [
    "ARRAY_TASK_VAR",
    "MASK",
    "EnvKeys",
    "SealError",
    "env_names",
    "is_sealed",
    "keys_for",
    "masked",
    "open_env",
    "seal_env",
]

SEALED = "$sealed"
NAMES = "$names"
MASK = "********"
ARRAY_TASK_VAR = "GPUCENTER_ARRAY_TASK_ID"
_PREFIX = "g1"
_FORMAT = 1


class SealError(Exception):
    """A sealed environment that cannot be opened: unknown key, tampered or truncated."""


@dataclass(frozen=True, slots=True)
class _Ring:
    keys: tuple[tuple[str, bytes], ...]  # (id, 32-byte key), oldest first

    @property
    def current(self) -> tuple[str, bytes]:
        return self.keys[-1]

    def find(self, key_id: str) -> bytes | None:
        for kid, key in self.keys:
            if kid == key_id:
                return key
        return None

    def to_json(self) -> str:
        return json.dumps(
            {"format": _FORMAT, "keys": [{"id": k, "secret": v.hex()} for k, v in self.keys]},
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> _Ring:
        body = json.loads(text)
        keys = tuple((str(k["id"]), bytes.fromhex(k["secret"])) for k in body["keys"])
        if not keys:
            raise ValueError("the environment key ring holds no key")
        return cls(keys)


def _new_key() -> tuple[str, bytes]:
    key = secrets.token_bytes(32)
    return hashlib.sha256(b"gpucenter env key\0" + key).hexdigest()[:12], key


class EnvKeys:
    """The key ring file of one server (`<var>/secrets/env-keys.json`), loaded once and
    read again only when a token names a key this process does not know (another process
    rotated)."""

    _by_path: ClassVar[dict[Path, EnvKeys]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    RECHECK_S = 2.0  # how often sealing looks for a rotation made by another process

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ring: _Ring | None = None
        self._ciphers: dict[str, AESGCM] = {}
        self._checked = 0.0
        self._stamp: tuple[int, int] | None = None

    @classmethod
    def under(cls, var_dir: Path) -> EnvKeys:
        """The one `EnvKeys` of this process for the state directory `var_dir`."""
        path = (var_dir / "secrets" / "env-keys.json").absolute()
        with cls._lock:
            found = cls._by_path.get(path)
            if found is None:
                found = cls._by_path[path] = cls(path)
            return found

    def _load(self) -> _Ring | None:
        try:
            st = os.stat(self.path)
            ring = _Ring.from_json(self.path.read_text())
        except FileNotFoundError:
            return None
        self._stamp = (st.st_ino, st.st_mtime_ns)
        return ring

    def _recheck(self) -> None:
        """Take up a rotation made by another process (`gpucenter admin rotate-env-key`):
        the file is looked at (one stat) at most every RECHECK_S seconds."""
        now = time.monotonic()
        if self._ring is None or now - self._checked < self.RECHECK_S:
            return
        self._checked = now
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if (st.st_ino, st.st_mtime_ns) != self._stamp:
            reloaded = self._load()
            if reloaded is not None:
                self._ring = reloaded

    def ring(self) -> _Ring:
        """The ring; made on first use (two processes at once end with the first one's)."""
        ring = self._ring
        if ring is not None:
            return ring
        with self._lock:
            ring = self._load()
            if ring is None:
                ring = _Ring((_new_key(),))
                if not create_private(self.path, ring.to_json()):
                    loaded = self._load()
                    assert loaded is not None
                    ring = loaded
            self._ring = ring
            return ring

    def rotate(self) -> str:
        """Take a new key into use (old ones stay, so old rows still open); its id."""
        ring = self.ring()
        ring = _Ring((*ring.keys, _new_key()))
        replace_private(self.path, ring.to_json())
        st = os.stat(self.path)
        self._ring, self._stamp = ring, (st.st_ino, st.st_mtime_ns)
        return ring.current[0]

    def digest_key(self) -> bytes:
        """A key for keyed digests of secrets (the Idempotency-Key fingerprint), derived
        from the ring's first key so that it stays the same across rotations."""
        return hashlib.sha256(b"gpucenter env digest\0" + self.ring().keys[0][1]).digest()

    def cipher(self, key_id: str | None = None) -> tuple[str, AESGCM]:
        """(id, cipher) of the current key, or of the key `key_id` (SealError if unknown)."""
        if key_id is None:
            self._recheck()
        ring = self.ring()
        kid = ring.current[0] if key_id is None else key_id
        found = self._ciphers.get(kid)
        if found is not None:
            return kid, found
        key = ring.find(kid)
        if key is None:
            reloaded = self._load()  # rotated by another process since we loaded it
            if reloaded is not None:
                self._ring = reloaded
                key = reloaded.find(kid)
        if key is None:
            raise SealError(f"sealed with key {kid!r}, which this server's key ring lacks")
        cipher = self._ciphers[kid] = AESGCM(key)
        return kid, cipher


def keys_for(info: Mapping[str, Any] | None) -> EnvKeys:
    """The key ring a session (or sessionmaker) `info` names (`"env_keys"`, set by the
    wiring), else the one under the configured state directory."""
    found = (info or {}).get("env_keys")
    if isinstance(found, EnvKeys):
        return found
    from gpucenter.config import get_settings

    return EnvKeys.under(get_settings().var_dir)


def _aad(user_id: int, names: list[str]) -> bytes:
    return f"gpucenter job env\0{user_id}\0{chr(0).join(names)}".encode()


def seal_env(keys: EnvKeys, user_id: int, env: Mapping[str, str]) -> dict[str, Any]:
    """The stored form of `env` for a job of `user_id`: one encryption, whatever its size.
    An empty env is stored empty."""
    if not env:
        return {}
    names = list(env)
    kid, cipher = keys.cipher()
    nonce = secrets.token_bytes(12)
    plain = json.dumps(dict(env), separators=(",", ":")).encode()
    sealed = cipher.encrypt(nonce, plain, _aad(user_id, names))
    token = f"{_PREFIX}.{kid}.{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"
    return {SEALED: token, NAMES: names}


def is_sealed(stored: Mapping[str, Any] | None) -> bool:
    return bool(stored) and SEALED in (stored or {})


def open_env(keys: EnvKeys, user_id: int, stored: Mapping[str, Any] | None) -> dict[str, str]:
    """The clear env of a stored one (SealError if it cannot be opened: fail closed)."""
    if not stored:
        return {}
    clear = {k: str(v) for k, v in stored.items() if k not in (SEALED, NAMES)}
    if SEALED not in stored:
        return clear
    token, names = stored[SEALED], stored.get(NAMES)
    if not isinstance(token, str) or not isinstance(names, list):
        raise SealError("the stored environment is malformed")
    prefix, _, rest = token.partition(".")
    kid, _, body = rest.partition(".")
    if prefix != _PREFIX or not kid or not body:
        raise SealError("the stored environment is not a sealed token this server knows")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError:
        raise SealError("the sealed environment is not valid base64") from None
    if len(raw) < 12 + 16:
        raise SealError("the sealed environment is truncated")
    _, cipher = keys.cipher(kid)
    try:
        plain = cipher.decrypt(raw[:12], raw[12:], _aad(user_id, [str(n) for n in names]))
    except InvalidTag:
        raise SealError("the sealed environment fails its integrity check") from None
    opened = json.loads(plain)
    if not isinstance(opened, dict) or list(opened) != names:
        raise SealError("the sealed environment does not match its names")
    return {**{k: str(v) for k, v in opened.items()}, **clear}


def env_names(stored: Mapping[str, Any] | None) -> list[str]:
    """The variable names of a stored env, without opening it."""
    if not stored:
        return []
    names = [k for k in stored if k not in (SEALED, NAMES)]
    sealed_names = stored.get(NAMES) if SEALED in stored else None
    if isinstance(sealed_names, list):
        names = [str(n) for n in sealed_names] + names
    return names


def masked(stored: Mapping[str, Any] | None) -> dict[str, str]:
    """Names with their values masked: what anyone but the job's owner sees."""
    return dict.fromkeys(env_names(stored), MASK)
