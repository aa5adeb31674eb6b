"""English of the refusals of interactive sessions (starting one, reaching it, sharing it).

Why a module of its own: see `texts_programmes.py`. `ENGLISH` merges this dict; the Korean
is in `gpucenter/locale/ko/session_errors.po`."""

from __future__ import annotations

SESSION_ERRORS: dict[str, str] = {
    "error.session_python": "must be an absolute path, got %(python)s",
    "error.session_idle": "must be at least 60 seconds",
    "error.session_kind": "no session kind %(name)s; known: %(known)s",
    "error.sessions_off": "interactive sessions are not enabled at this site",
    "error.session_share": "must be another member of the session's project",
    "error.session_owner_only": "only the session's owner may do this",
    "error.session_not_running": "session %(job)s is not running",
    "error.session_starting": "the session is starting: its server is not listening yet",
    "error.session_dir_unsafe": "session %(job)s: its directory is not safe to use",
    "error.session_socket_refused": "session %(job)s: its socket is refused (%(why)s)",
    "error.session_address_refused": "session %(job)s: its address file is refused (%(why)s)",
    "error.session_peer": "the session's socket is served by uid %(uid)s, not its owner's",
    "error.session_no_socket": "the session's connection has no socket to check",
    "error.session_certificate": (
        "session %(job)s: the server at its address does not hold the session's certificate"
    ),
    "error.session_unreachable": "session %(job)s: its server cannot be reached (%(why)s)",
}
