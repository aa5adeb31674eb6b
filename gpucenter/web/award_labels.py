"""Words people read for the after-award states, kinds and report questions, in both
languages: stored values are English identifiers, and every one has a marked label here
(the templates show `_(label(...))`, never the raw value).

A state's label is its own msgid where the same English word means something else elsewhere
in the portal ("Submitted" is a time on the job pages, "Open" a call taking applications,
"Due" a column of dates): the catalogue has one translation per msgid, so a shared word
would read wrongly in Korean."""

from __future__ import annotations

from collections.abc import Mapping

from gpucenter.web.i18n import N_

AWARD_STATES: Mapping[str, str] = {
    "offered": N_("Offered"),
    "active": N_("Active"),
    "declined": N_("Declined"),
    "lapsed": N_("Lapsed"),
    "completed": N_("Completed"),
    "revoked": N_("Revoked"),
}

AGREEMENT_STATES: Mapping[str, str] = {
    "awaiting_pi": N_("Waiting for the PI's acceptance"),
    "awaiting_countersignature": N_("Waiting for the organisation's countersignature"),
    "in_force": N_("In force"),
    "declined": N_("Declined"),
    "lapsed": N_("Lapsed"),
}

RESERVE_STATES: Mapping[str, str] = {
    "waiting": N_("Waiting"),
    "offered": N_("Offered an award"),
    "closed": N_("Closed"),
}

REPORT_KINDS: Mapping[str, str] = {
    "progress": N_("Progress report"),
    "final": N_("Final report"),
}

REPORT_STATES: Mapping[str, str] = {
    "due": N_("Not yet submitted"),
    "overdue": N_("Overdue"),
    "submitted": N_("Submitted for review"),
    "accepted": N_("Accepted"),
    "returned": N_("Returned for changes"),
}

NOTICE_KINDS: Mapping[str, str] = {
    "warning": N_("Under-use warning"),
    "reclaim": N_("Reclaim"),
    "commercial": N_("Commercial use to review"),
}

NOTICE_STATES: Mapping[str, str] = {
    "open": N_("Pending"),
    "appealed": N_("Appealed"),
    "executed": N_("Reclaimed"),
    "withdrawn": N_("Withdrawn"),
    "cleared": N_("Cleared"),
    "confirmed": N_("Confirmed"),
}

REQUEST_KINDS: Mapping[str, str] = {
    "renewal": N_("Renewal"),
    "supplement": N_("Supplement"),
    "extension": N_("Extension"),
    "transfer": N_("Transfer"),
}

REQUEST_STATES: Mapping[str, str] = {
    "submitted": N_("Submitted for review"),
    "recommended": N_("Recommended by a reviewer"),
    "approved": N_("Approved"),
    "rejected": N_("Not approved"),
    "withdrawn": N_("Withdrawn"),
}

OUTCOME_KINDS: Mapping[str, str] = {
    "paper": N_("Paper (DOI)"),
    "model": N_("Model"),
    "patent": N_("Patent"),
    "product": N_("Product or service"),
    "people_trained": N_("People trained"),
}

ALLOCATION_STATES: Mapping[str, str] = {
    "active": N_("Active"),
    "exhausted": N_("Used up"),
    "expired": N_("Ended"),
    "suspended": N_("Suspended"),
    "pending": N_("Waiting for the agreement"),
    "withdrawn": N_("Withdrawn"),
}

PERMITTED_USES: Mapping[str, str] = {
    "research": N_("Research only"),
    "commercial": N_("Research and commercial use"),
}

# The default report form's questions (a programme's own questions carry their labels).
QUESTIONS: Mapping[str, str] = {
    "summary": N_("Summary of progress"),
    "next_steps": N_("Plans for the next period"),
    "commercial_use": N_("Was any work under this award used for a commercial product or service?"),
}

OUTCOME_DIMENSIONS: Mapping[str, str] = {
    "programme": N_("Programme"),
    "applicant_type": N_("Applicant type"),
    "region": N_("Region"),
    "strategic_field": N_("Strategic technology field"),
}
