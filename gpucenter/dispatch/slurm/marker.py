"""The per-run marker gpucenter puts on every Slurm job it submits, and its key.

A Slurm job's ``--comment`` is ``gpucenter:<job id>:<run>:<mac>``, where ``mac`` is the first
`MAC_HEX` hex digits of HMAC-SHA256(key, ``<site>|<job id>|<run>``). The key is 32 random
bytes in a file only the server can read (`MarkerKey.load_or_create`: 0600 in a 0700
directory, beside the audit key ring, never in the database): a user can put any comment on
a Slurm job of their own, but cannot compute a valid marker for a job or a run they have not
seen. `site` binds the marker to the site's namespace (its top account), so a marker from one
site is no marker at another.

What a user *can* do is copy the marker of a job of their own that they see in ``squeue``.
That gains them nothing: adoption also wants the job's owner and project account (so the copy
can only be their own job, charged to their own project, as gpucenter would have charged the
job), takes the earliest submitted of several valid candidates (the copy is always later than
the job it was copied from) and refuses the rest; the usage ingest counts a Slurm job as
gpucenter's only when it is the Slurm job id gpucenter recorded for that job, so a copy is
charged to the project and flagged as an outside submission; and where the site refuses
outside submissions (`submit_rule`), the copy is refused at ``sbatch``. Slurm's
``AdminComment`` (only an administrator may set it) would be a field users cannot write at
all, but 22.05's sbatch cannot set it at submission; setting it by ``scontrol update`` after
sbatch leaves a window (a crash in between) in which our own job lacks it, which is exactly
when adoption needs it. So the HMAC stands alone.

The older form ``gpucenter:<job id>`` is parsed (for the ingest and the logs) but is never
a valid marker.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = ["COMMENT_PREFIX", "MAC_HEX", "Marker", "MarkerKey", "parse_marker"]

COMMENT_PREFIX = "gpucenter:"
MAC_HEX = 24
"""96 bits of the HMAC: guessing one is hopeless, and the comment stays short."""


@dataclass(frozen=True, slots=True)
class Marker:
    """A comment that names a gpucenter job; `run` and `mac` are None in the old form."""

    job_id: int
    run: int | None
    mac: str | None


def parse_marker(comment: str) -> Marker | None:
    """The job (and run and MAC) a comment names, None where it names none. Says nothing about
    whether the MAC is right: `MarkerKey.valid` does."""
    if not comment.startswith(COMMENT_PREFIX):
        return None
    parts = comment.removeprefix(COMMENT_PREFIX).split(":")
    if len(parts) == 1 and parts[0].isdigit():
        return Marker(int(parts[0]), None, None)
    if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() and parts[2]:
        return Marker(int(parts[0]), int(parts[1]), parts[2])
    return None


@dataclass(frozen=True, slots=True)
class MarkerKey:
    """The server's secret for markers, bound to one site (its top account)."""

    secret: bytes
    site: str

    def mac(self, job_id: int, run: int) -> str:
        message = f"{self.site}|{int(job_id)}|{int(run)}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:MAC_HEX]

    def marker(self, job_id: int, run: int) -> str:
        """The comment for this job's `run` at this site."""
        return f"{COMMENT_PREFIX}{int(job_id)}:{int(run)}:{self.mac(job_id, run)}"

    def valid(self, comment: str) -> Marker | None:
        """The marker in `comment` when its MAC is right for its job and run; else None."""
        found = parse_marker(comment)
        if found is None or found.run is None or found.mac is None:
            return None
        if not hmac.compare_digest(found.mac, self.mac(found.job_id, found.run)):
            return None
        return found

    @classmethod
    def load_or_create(cls, path: Path, site: str) -> MarkerKey:
        """The key in `path`, made (32 random bytes, 0600, its directory 0700) when missing.
        Two processes starting at once both end with the one that was written first."""
        path = Path(path)
        try:
            return cls(_read(path), site)
        except FileNotFoundError:
            pass
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            return cls(_read(path), site)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        return cls(_read(path), site)


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as f:
        text = f.read().strip()
    secret = bytes.fromhex(text)
    if len(secret) < 16:
        raise ValueError(f"the Slurm marker key in {path} is too short")
    return secret
