"""Interactive session kinds: a web application (JupyterLab first) run as an ordinary job.

A session is a job like any other (same scheduler, time limit, ledger, cancel); what makes it
a session is its kind, a template for the job's command. The command is filled in by the
server, never by the user, so a session's job cannot be steered into anything else:

- it listens on a Unix socket named `socket_name(job_id)` in its working directory (its run
  directory on a local site, its owner's log directory on a Slurm site),
  which only its owner and the root server can reach (a TCP port on a shared node would be
  reachable by every tenant there);
- it serves below `base_url(job_id)`, the portal's proxy prefix, so its pages' links work
  through the proxy;
- it checks a per-session secret the server gives it in ``JUPYTER_TOKEN`` (`TOKEN_VARIABLE`) at
  launch and adds to each proxied request; the secret is derived from a server key and never
  stored or shown;
- it shuts itself down after `idle_s` without activity; its wall time is the job's time limit.

A new kind is one more `SessionKind` in `KINDS` (an application that can listen on a Unix socket
below a base URL and check a token).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from gpucenter.domain.errors import ValidationError

__all__ = [
    "JUPYTERLAB",
    "KINDS",
    "SESSION_TEMPLATE_PREFIX",
    "TOKEN_VARIABLE",
    "SessionKind",
    "base_url",
    "is_session_path",
    "kind_named",
    "kind_of_template",
    "socket_name",
]


def socket_name(job_id: int) -> str:
    """The socket's name in the job's working directory. Named after the job: on a Slurm site
    the working directory is the owner's log directory, shared by all their jobs."""
    return f"session-{int(job_id)}.sock"


TOKEN_VARIABLE = "JUPYTER_TOKEN"
SESSION_TEMPLATE_PREFIX = "session:"
"""A session's job records its kind in the job's template column as ``session:<kind>``."""
_PYTHON = re.compile(r"^/[A-Za-z0-9._/+-]+$")


_SESSION_PATH = re.compile(r"^/sessions/[0-9]+/app/")


def is_session_path(path: str) -> bool:
    """Whether `path` is forwarded to an interactive session (below some `base_url`)."""
    return _SESSION_PATH.match(path) is not None


def base_url(job_id: int) -> str:
    """Where the portal proxies session `job_id` (with a trailing slash, as Jupyter wants)."""
    return f"/sessions/{job_id}/app/"


@dataclass(frozen=True, slots=True)
class SessionKind:
    """One kind of interactive application and the command that starts it."""

    name: str
    title: str
    command: str
    """Format string: ``{python}`` (the site's interpreter), ``{idle_s}``; the job id (its socket's
    name, its base URL) is read from ``$GPUCENTER_JOB_ID`` when the job starts (unknown when it
    is submitted)."""

    @property
    def template(self) -> str:
        """What a session job of this kind records as its template."""
        return SESSION_TEMPLATE_PREFIX + self.name

    def render(self, python: str, idle_s: int) -> str:
        """The job's command line for this site's interpreter and idle timeout."""
        if not _PYTHON.match(python):
            raise ValidationError("python", f"must be an absolute path, got {python!r}")
        if idle_s < 60:
            raise ValidationError("idle_s", "must be at least 60 seconds")
        return self.command.format(python=shlex.quote(python), idle_s=int(idle_s))


JUPYTERLAB = SessionKind(
    name="jupyterlab",
    title="JupyterLab",
    command=(
        # A Slurm job may inherit a HOME it cannot write (sbatch --uid keeps the submitter's):
        # Jupyter's runtime files then go to the working directory, the owner's own.
        '[ -w "$HOME" ] || export HOME="$PWD"; '
        "exec {python} -m jupyterlab --no-browser"
        ' --ServerApp.sock="session-$GPUCENTER_JOB_ID.sock" --ServerApp.sock_mode=0600'
        ' --ServerApp.base_url="/sessions/$GPUCENTER_JOB_ID/app/"'
        " --ServerApp.allow_remote_access=True"
        " --ServerApp.shutdown_no_activity_timeout={idle_s}"
        " --MappingKernelManager.cull_idle_timeout={idle_s}"
        " --MappingKernelManager.cull_interval=60"
        " --TerminalManager.cull_inactive_timeout={idle_s}"
        " --ServerApp.root_dir=."
    ),
)

KINDS: dict[str, SessionKind] = {JUPYTERLAB.name: JUPYTERLAB}


def kind_named(name: str) -> SessionKind:
    """The kind called `name`; ValidationError naming the known ones otherwise."""
    kind = KINDS.get(name)
    if kind is None:
        raise ValidationError("kind", f"no session kind {name!r}; known: {', '.join(KINDS)}")
    return kind


def kind_of_template(template: str | None) -> SessionKind | None:
    """The session kind a job's template column names, or None for an ordinary job."""
    if not template or not template.startswith(SESSION_TEMPLATE_PREFIX):
        return None
    return KINDS.get(template[len(SESSION_TEMPLATE_PREFIX) :])
