"""What keeps the audit log honest outside the database: the key ring and the head file.

Whoever can write the database could otherwise recompute the whole hash chain and make a
rewritten log verify. So each entry's hash is an HMAC under a secret kept in a file only the
server can read (0600, in a 0700 directory), and the newest entries are also appended to a
head file beside it, so that cutting entries off the end is caught even when the database's
own head row was rewritten too.

The key ring holds every key ever used (the last is current; rotation appends one and the
log records the change) and the *sealed prefix*: entries written before the log had a key
(by an older gpucenter) are plain SHA-256 links, accepted only up to the entry the ring names,
with that entry's hash. A chain recomputed without the key therefore fails either way: as
keyed entries with wrong HMACs, or as unkeyed entries past the sealed prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpucenter.persistence.private_files import create_private, private_dir, replace_private

__all__ = ["AuditFiles", "KeyRing", "SigningKey"]

_FORMAT = 1


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One HMAC key; its id (a digest prefix) is stored with every entry it signed."""

    id: str
    secret: bytes
    created: str

    @classmethod
    def new(cls) -> SigningKey:
        secret = secrets.token_bytes(32)
        key_id = hashlib.sha256(secret).hexdigest()[:12]
        return cls(key_id, secret, datetime.now(tz=UTC).isoformat(timespec="seconds"))

    def sign(self, prev_hash: str, canonical: str) -> str:
        return hmac.new(self.secret, (prev_hash + "\n" + canonical).encode(), "sha256").hexdigest()


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Every key in the order they were taken into use, and the sealed unkeyed prefix."""

    keys: tuple[SigningKey, ...]
    sealed_id: int
    sealed_hash: str

    @property
    def current(self) -> SigningKey:
        return self.keys[-1]

    def index_of(self, key_id: str) -> int | None:
        for i, key in enumerate(self.keys):
            if key.id == key_id:
                return i
        return None

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "format": _FORMAT,
            "keys": [
                {"id": k.id, "secret": k.secret.hex(), "created": k.created} for k in self.keys
            ],
            "sealed_prefix": {"last_id": self.sealed_id, "last_hash": self.sealed_hash},
        }
        return json.dumps(body, indent=1)

    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        body = json.loads(text)
        keys = tuple(
            SigningKey(k["id"], bytes.fromhex(k["secret"]), k.get("created", ""))
            for k in body["keys"]
        )
        if not keys:
            raise ValueError("the audit key ring holds no key")
        sealed = body.get("sealed_prefix") or {}
        return cls(keys, int(sealed.get("last_id", 0)), str(sealed.get("last_hash", "")))


@dataclass(frozen=True, slots=True)
class AuditFiles:
    """Where the key ring and the head file of this server live."""

    key_ring: Path
    head_log: Path

    @classmethod
    def under(cls, var_dir: Path) -> AuditFiles:
        return cls(var_dir / "secrets" / "audit-keys.json", var_dir / "audit" / "head.log")

    def load(self) -> KeyRing | None:
        """The key ring, or None where the log has none yet."""
        try:
            return KeyRing.from_json(self.key_ring.read_text())
        except FileNotFoundError:
            return None

    def load_or_create(self, sealed_id: int, sealed_hash: str) -> KeyRing:
        """The key ring; made on first use, sealing the entries already written unkeyed.
        Two processes starting at once both end with the one ring that was written first."""
        ring = self.load()
        if ring is not None:
            return ring
        ring = KeyRing((SigningKey.new(),), sealed_id, sealed_hash)
        if not create_private(self.key_ring, ring.to_json()):
            loaded = self.load()
            assert loaded is not None
            return loaded
        return ring

    def save(self, ring: KeyRing) -> None:
        """Replace the ring (rotation) atomically, never leaving a half-written file."""
        replace_private(self.key_ring, ring.to_json())

    def append_heads(self, heads: list[tuple[int, str]]) -> None:
        """Append committed entries' (id, hash), one line each, in one write (O_APPEND keeps
        lines of several server processes whole)."""
        if not heads:
            return
        private_dir(self.head_log.parent)
        fd = os.open(self.head_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, "".join(f"{i} {h}\n" for i, h in heads).encode())
        finally:
            os.close(fd)

    def read_heads(self) -> dict[int, str]:
        """Every (id, hash) the head file remembers; a torn last line is ignored."""
        try:
            text = self.head_log.read_text()
        except FileNotFoundError:
            return {}
        heads: dict[int, str] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and len(parts[1]) == 64:
                heads[int(parts[0])] = parts[1]
        return heads
