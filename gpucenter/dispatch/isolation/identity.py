"""Who a job runs as: the Unix identity the sandbox switches to.

Its own module so that the sandbox does not depend on where identities come from: the local
site provisions them itself (`unix_accounts`), a real centre gets them from FreeIPA/LDAP.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunAs"]


@dataclass(frozen=True, slots=True)
class RunAs:
    """A job's Unix identity: uid, primary gid, and the supplementary groups it gets.

    `groups` is deliberately the job's *project* group(s) only, not every group the user is
    in: a job of project A must not write project B's shared space just because its owner is
    a member of both. `home` is the owner's home directory if the site gives accounts one (it
    is then bound read-write into the sandbox and becomes ``HOME``); otherwise ``HOME`` is
    the job's working directory.
    """

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    home: Path | None = None

    def __post_init__(self) -> None:
        if self.uid <= 0 or self.gid <= 0 or any(g <= 0 for g in self.groups):
            raise ValueError(f"{self.name}: a job never runs as root or with root's group")
        if self.home is not None and not self.home.is_absolute():
            raise ValueError(f"{self.name}: home must be an absolute path")
