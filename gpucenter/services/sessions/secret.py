"""The per-session secret: derived from a server key, never stored, never shown.

Jupyter is given its secret in its environment at launch (`launch.launch_request`) and the
proxy adds it to every request it forwards. Nothing else has it: it is an HMAC of the job id
under a key kept in the server's private state directory (``var_dir/secrets/session-key``,
0600, hidden from every job), so the database (or a backup of it) does not hold it, and no
page or API returns it. The socket Jupyter listens on is already reachable by its owner and
root only; the secret means that even another process of the owner's (or a socket planted in
its place) cannot be used through the proxy without it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from functools import lru_cache
from pathlib import Path

from gpucenter.config import Settings
from gpucenter.dispatch.isolation.safe_files import ensure_private_dir, write_private_file

__all__ = ["session_key", "session_token"]

_KEY_FILE = "session-key"


@lru_cache(maxsize=8)
def _key_at(directory: str) -> bytes:
    where = Path(directory)
    ensure_private_dir(where)
    path = where / _KEY_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        write_private_file(path, secrets.token_bytes(32))
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        key = os.read(fd, 64)
    finally:
        os.close(fd)
    if len(key) < 32:
        raise RuntimeError(f"{path}: the session key is shorter than 32 bytes")
    return key


def session_key(settings: Settings) -> bytes:
    """The server's session key, made on first use (read once per process)."""
    return _key_at(str((settings.var_dir / "secrets").resolve()))


def session_token(key: bytes, job_id: int) -> str:
    """The secret of session `job_id`: what Jupyter checks (``JUPYTER_TOKEN``)."""
    return hmac.new(key, f"gpucenter-session:{job_id}".encode(), hashlib.sha256).hexdigest()
