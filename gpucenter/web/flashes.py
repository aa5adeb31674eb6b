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
    # After the award (award_pages, award_manage_pages).
    | {
        N_("The agreement is countersigned and in force."),
        N_("The appeal is decided."),
        N_("The award is flagged for review."),
        N_("The award is overridden in a new run; decide it to keep it."),
        N_("The award was changed; the reason is in the audit log."),
        N_("The commercial-use flag is reviewed."),
        N_("The fast-tier application is decided."),
        N_("The offer was declined."),
        N_("The optimiser proposed a re-offer. Nothing is decided yet."),
        N_("The outcome was recorded."),
        N_("The re-offer is approved: the reserve applicants have offers."),
        N_("The report is reviewed."),
        N_("The request is decided."),
        N_("The reserve list is closed."),
        N_("The reviewer was appointed."),
        N_("The reviewer was asked for a recommendation."),
        N_("You accepted the agreement."),
        N_("Your appeal was sent to the programme manager."),
        N_("Your recommendation was sent to the programme manager."),
        N_("Your report was submitted."),
        N_("Your request was sent to the programme."),
    }
    # Interactive sessions (session_pages).
    | {
        N_("Session requested: it starts when its GPUs are free."),
        N_("The session is stopping."),
        N_("Sharing of the session was changed."),
    }
)


def shown(value: str) -> str:
    """The flash to show for a `?flash=` value: itself if it is one of ours, else nothing."""
    return value if value in FLASHES else ""
