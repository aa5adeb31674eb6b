"""Whether this server may start jobs, and how isolated: decided once at start, said loudly.

Two explicit site settings:

- ``multi_tenant``: every job runs as its owner's Unix account inside a sandbox. That needs
  root (to switch users and to build mount namespaces) and a working sandbox (bubblewrap).
  Without either, *no job starts*: running a tenant's job as the server, or as anybody else,
  is exactly what this mode exists to prevent.
- ``single_user``: a laptop, ``make run`` as a normal user. Every job runs as the server's
  own user (sandboxed when bubblewrap works, so it still cannot see the server's state;
  unsandboxed otherwise). Allowed only while the site has at most one organisation: with two,
  one tenant's job would run with the same identity as the other's files and the database.
  Unless the operator names the one person it serves (``single_user_owner``): then only
  that gpucenter user's jobs run, whatever the number of organisations, and everybody
  else's wait, saying why (a laptop with the lived-in demo's ten organisations: the demo
  user's jobs run as you, nobody else's run at all). One person's jobs under one identity is
  what the mode means; no second tenant ever shares it.

`decide_mode` is a pure function of explicit inputs so every case is a one-line test; the
server logs the decision's message at the decision's level when it starts, and refuses to
start jobs (keeping them queued, with the message as their reason) when `may_run_jobs` is
false.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

__all__ = ["IsolationSetting", "ModeDecision", "RunMode", "decide_mode"]


class IsolationSetting(enum.StrEnum):
    """The site's setting (configuration value)."""

    MULTI_TENANT = "multi_tenant"
    SINGLE_USER = "single_user"


class RunMode(enum.Enum):
    MULTI_TENANT = "multi-tenant"
    SINGLE_USER = "single-user"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class ModeDecision:
    """What the dispatcher does with jobs, and the message to log (at `level`) and show."""

    mode: RunMode
    may_run_jobs: bool
    switch_user: bool
    """Jobs run as their owners (the sandbox drops to the owner's uid)."""
    sandboxed: bool
    """Jobs run inside bubblewrap."""
    level: int
    message: str
    only_owner: str | None = None
    """Single-user mode serving one named person: only this gpucenter user's jobs start."""

    def refuses_owner(self, username: str) -> str:
        """Why a job of `username` may not start under this decision (empty: it may)."""
        if self.only_owner is None or username == self.only_owner:
            return ""
        return (
            f"single-user mode runs only {self.only_owner}'s jobs (as the server's own user); "
            f"{username}'s jobs wait. Run the server as root (multi-tenant) to run everybody's"
        )


def decide_mode(
    *,
    euid: int,
    setting: IsolationSetting | str,
    organisations: int,
    sandbox_problem: str | None = None,
    owner: str | None = None,
) -> ModeDecision:
    """Decide from the server's effective uid, the site setting, the number of organisations
    on the site, why the sandbox cannot run here (None: it works) and, for single-user mode,
    the one gpucenter user it serves (None: whoever, while there is one organisation)."""
    try:
        chosen = IsolationSetting(setting)
    except ValueError:
        return ModeDecision(
            RunMode.REFUSED,
            False,
            False,
            False,
            logging.ERROR,
            f"unknown isolation setting {setting!r} (multi_tenant or single_user): "
            "no job will start",
        )
    if chosen is IsolationSetting.MULTI_TENANT:
        if euid != 0:
            return ModeDecision(
                RunMode.REFUSED,
                False,
                False,
                False,
                logging.ERROR,
                f"multi-tenant isolation needs root to start jobs as their owners, and this "
                f"server runs as uid {euid}: NO JOB WILL START. Run the server as root, or set "
                "isolation=single_user on a machine with one organisation.",
            )
        if sandbox_problem is not None:
            return ModeDecision(
                RunMode.REFUSED,
                False,
                False,
                False,
                logging.ERROR,
                f"multi-tenant isolation needs the bubblewrap sandbox, which does not work "
                f"here ({sandbox_problem}): NO JOB WILL START. Install it (apt-get install "
                "bubblewrap) and allow namespaces.",
            )
        return ModeDecision(
            RunMode.MULTI_TENANT,
            True,
            True,
            True,
            logging.INFO,
            "multi-tenant isolation: every job runs as its owner's Unix account inside a "
            "bubblewrap sandbox (own processes, own GPUs, no server state)",
        )
    if organisations > 1 and not owner:
        return ModeDecision(
            RunMode.REFUSED,
            False,
            False,
            False,
            logging.ERROR,
            f"single-user mode runs every job as the server's own user (uid {euid}), but this "
            f"site has {organisations} organisations, whose jobs would then share one identity "
            "with each other's files and the server's: NO JOB WILL START. Use "
            "isolation=multi_tenant (as root), or name the one user this server runs jobs "
            "for with single_user_owner.",
        )
    who = "ROOT" if euid == 0 else f"uid {euid}"
    if sandbox_problem is None:
        how = "inside a bubblewrap sandbox (it cannot see the server's state)"
    else:
        how = f"UNSANDBOXED, bubblewrap does not work here ({sandbox_problem})"
    if owner:
        return ModeDecision(
            RunMode.SINGLE_USER,
            True,
            False,
            sandbox_problem is None,
            logging.WARNING,
            f"SINGLE-USER MODE: only {owner}'s jobs run, as the server's own user ({who}), "
            f"{how}; the jobs of the other users of this site's {organisations} "
            "organisation(s) wait. Fine for one person on a laptop; never for a shared site.",
            only_owner=owner,
        )
    return ModeDecision(
        RunMode.SINGLE_USER,
        True,
        False,
        sandbox_problem is None,
        logging.WARNING,
        f"SINGLE-USER MODE: every job runs as the server's own user ({who}), {how}. "
        "Fine for one person on a laptop; never for a site with more than one organisation.",
    )
