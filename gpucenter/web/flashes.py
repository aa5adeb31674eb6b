"""The messages a page may show after a redirect ("Job submitted."), and only those.

A redirect names its message in the URL (`?flash=...`) so that a reload does not repeat the
action. Whatever arrives there is only shown if it is one of these catalogue messages, so a
link made by someone else can neither inject markup nor put words in the centre's mouth
("your session expired, sign in here"). A test checks every redirect's message is listed.
"""

from __future__ import annotations

from gpucenter.web.i18n import N_

FLASHES: frozenset[str] = frozenset(
    {
        N_("Job submitted."),
        N_("Cancel requested."),
        N_("The job has already ended."),
        N_("The user was created."),
        N_("The organisation was created."),
        N_("The role was granted."),
        N_("The role was revoked."),
        N_("Your application was submitted."),
        N_("Your draft was saved."),
        N_("Your application was withdrawn."),
        N_("Reviewers were assigned."),
        N_("The optimiser ran. Nothing is decided yet."),
        N_("The awards are decided: projects and allocations exist."),
        N_("Your review was submitted."),
        N_("Conflict of interest declared; the application left your queue."),
    }
)


def shown(value: str) -> str:
    """The flash to show for a `?flash=` value: itself if it is one of ours, else nothing."""
    return value if value in FLASHES else ""
