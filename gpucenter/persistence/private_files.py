"""Small files only the server may read (key rings), written so that no reader ever sees
half of one: a new file is created exclusively, a replacement goes through a temporary
file and `os.replace`. Both key rings (the audit chain's and the sealed environments')
write this way; one place keeps the flags (0600, O_NOFOLLOW, fsync) the same."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["create_private", "private_dir", "replace_private"]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def private_dir(path: Path) -> None:
    """`path` as a directory only its owner may enter (made if missing)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _write(fd: int, text: str) -> None:
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())


def create_private(path: Path, text: str) -> bool:
    """Write `text` to a new 0600 file at `path`; False (nothing written) if one is there
    already: two processes making it at once end with the first one's."""
    private_dir(path.parent)
    try:
        fd = os.open(path, _FLAGS, 0o600)
    except FileExistsError:
        return False
    _write(fd, text)
    return True


def replace_private(path: Path, text: str) -> None:
    """Replace the file at `path` with `text` atomically (0600, never half-written)."""
    private_dir(path.parent)
    tmp = path.with_name(path.name + ".new")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    _write(os.open(tmp, _FLAGS, 0o600), text)
    os.replace(tmp, path)
