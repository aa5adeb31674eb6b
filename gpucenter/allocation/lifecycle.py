"""An award's life after the decision, as states and the moves allowed between them.

Selection is the start of an award's life, not the end: the PI accepts an agreement (and the
organisation countersigns where the programme says so), the award is used and checked
monthly, reports fall due, and changes are requested. Each of those things has a state
stored as one of these enums and moves only along the tables below, so that a service can
never write a state change the programme does not know (`check`), and every move can be
written to the audit log as from -> to.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

from gpucenter.domain.errors import Conflict
from gpucenter.domain.messages import Message, msg

S = TypeVar("S", bound=StrEnum)


class AwardState(StrEnum):
    """OFFERED until its agreement is in force (ACTIVE); DECLINED or LAPSED return its
    capacity to the pool; COMPLETED once its final report is accepted; REVOKED when the
    programme ends it early (confirmed misuse)."""

    OFFERED = "offered"
    ACTIVE = "active"
    DECLINED = "declined"
    LAPSED = "lapsed"
    COMPLETED = "completed"
    REVOKED = "revoked"


# States in which an award holds capacity of its call.
HOLDING_STATES: frozenset[AwardState] = frozenset({AwardState.OFFERED, AwardState.ACTIVE})


class AgreementState(StrEnum):
    """The PI accepts (or declines) by the deadline; where the programme asks for it the
    PI's organisation countersigns before the agreement is in force."""

    AWAITING_PI = "awaiting_pi"
    AWAITING_COUNTERSIGNATURE = "awaiting_countersignature"
    IN_FORCE = "in_force"
    DECLINED = "declined"
    LAPSED = "lapsed"


class ReserveState(StrEnum):
    """A reserve-list entry: waiting its turn, offered an award, or closed (withdrawn, or
    the manager closed the list)."""

    WAITING = "waiting"
    OFFERED = "offered"
    CLOSED = "closed"


class ReportKind(StrEnum):
    PROGRESS = "progress"
    FINAL = "final"


class ReportState(StrEnum):
    """DUE until its date; OVERDUE after it (and its grace days) while not submitted;
    SUBMITTED by the PI; ACCEPTED by the programme manager (RETURNED asks for more)."""

    DUE = "due"
    OVERDUE = "overdue"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    RETURNED = "returned"


class NoticeKind(StrEnum):
    """What a monthly use check can raise about an award."""

    WARNING = "warning"  # under-used this month; a reclaim follows if it stays so
    RECLAIM = "reclaim"  # GPU-hours to be taken back, after an appeal window
    COMMERCIAL = "commercial"  # signs of commercial use under a research-only award


class NoticeState(StrEnum):
    OPEN = "open"
    APPEALED = "appealed"
    EXECUTED = "executed"
    WITHDRAWN = "withdrawn"
    CLEARED = "cleared"
    CONFIRMED = "confirmed"


class RequestKind(StrEnum):
    """Changes to a standing award, as ACCESS knows them: more time and GPU-hours for a
    next period (renewal), more GPU-hours now (supplement), a later end without more
    GPU-hours (extension), GPU-hours moved to another GPU type (transfer)."""

    RENEWAL = "renewal"
    SUPPLEMENT = "supplement"
    EXTENSION = "extension"
    TRANSFER = "transfer"


class RequestState(StrEnum):
    SUBMITTED = "submitted"
    RECOMMENDED = "recommended"  # a reviewer recommended it; the manager decides
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


class ReviewStep(StrEnum):
    REVIEWER = "reviewer"
    MANAGER = "manager"


# Each request kind's review path: the steps it goes through, in order. A renewal asks
# for a new period's GPU-hours and is scored by a reviewer first, as an application is;
# the smaller changes are the programme manager's to decide.
REVIEW_PATHS: Mapping[RequestKind, tuple[ReviewStep, ...]] = {
    RequestKind.RENEWAL: (ReviewStep.REVIEWER, ReviewStep.MANAGER),
    RequestKind.SUPPLEMENT: (ReviewStep.MANAGER,),
    RequestKind.EXTENSION: (ReviewStep.MANAGER,),
    RequestKind.TRANSFER: (ReviewStep.MANAGER,),
}


class OutcomeKind(StrEnum):
    """What an award produced, as the ministry counts it."""

    PAPER = "paper"  # with a DOI
    MODEL = "model"  # a released model (a URL or registry name)
    PATENT = "patent"  # an application or grant number
    PRODUCT = "product"  # a product or service
    PEOPLE_TRAINED = "people_trained"  # students and staff trained (a count)


class PermittedUse(StrEnum):
    RESEARCH = "research"
    COMMERCIAL = "commercial"


class AccessTier(StrEnum):
    """A reviewed call, or a fast tier: small awards, automatic eligibility checks, each
    application decided by the manager within days, no peer review."""

    REVIEWED = "reviewed"
    FAST = "fast"


AWARD_MOVES: Mapping[AwardState, frozenset[AwardState]] = {
    AwardState.OFFERED: frozenset({AwardState.ACTIVE, AwardState.DECLINED, AwardState.LAPSED}),
    AwardState.ACTIVE: frozenset({AwardState.COMPLETED, AwardState.REVOKED}),
}

AGREEMENT_MOVES: Mapping[AgreementState, frozenset[AgreementState]] = {
    AgreementState.AWAITING_PI: frozenset(
        {
            AgreementState.AWAITING_COUNTERSIGNATURE,
            AgreementState.IN_FORCE,
            AgreementState.DECLINED,
            AgreementState.LAPSED,
        }
    ),
    AgreementState.AWAITING_COUNTERSIGNATURE: frozenset(
        {AgreementState.IN_FORCE, AgreementState.DECLINED, AgreementState.LAPSED}
    ),
}

REPORT_MOVES: Mapping[ReportState, frozenset[ReportState]] = {
    ReportState.DUE: frozenset({ReportState.OVERDUE, ReportState.SUBMITTED}),
    ReportState.OVERDUE: frozenset({ReportState.SUBMITTED}),
    ReportState.SUBMITTED: frozenset({ReportState.ACCEPTED, ReportState.RETURNED}),
    ReportState.RETURNED: frozenset({ReportState.SUBMITTED, ReportState.OVERDUE}),
}

NOTICE_MOVES: Mapping[NoticeKind, Mapping[NoticeState, frozenset[NoticeState]]] = {
    NoticeKind.WARNING: {NoticeState.OPEN: frozenset({NoticeState.CLEARED})},
    NoticeKind.RECLAIM: {
        NoticeState.OPEN: frozenset(
            {NoticeState.APPEALED, NoticeState.EXECUTED, NoticeState.WITHDRAWN}
        ),
        NoticeState.APPEALED: frozenset({NoticeState.EXECUTED, NoticeState.WITHDRAWN}),
    },
    NoticeKind.COMMERCIAL: {
        NoticeState.OPEN: frozenset({NoticeState.CLEARED, NoticeState.CONFIRMED})
    },
}

REQUEST_MOVES: Mapping[RequestState, frozenset[RequestState]] = {
    RequestState.SUBMITTED: frozenset(
        {
            RequestState.RECOMMENDED,
            RequestState.APPROVED,
            RequestState.REJECTED,
            RequestState.WITHDRAWN,
        }
    ),
    RequestState.RECOMMENDED: frozenset(
        {RequestState.APPROVED, RequestState.REJECTED, RequestState.WITHDRAWN}
    ),
}


def check(moves: Mapping[S, frozenset[S]], what: Message, old: S, new: S) -> None:
    """Raise Conflict unless `old` -> `new` is an allowed move in `moves`. `what` names the
    thing (a `thing.*` message), so the refusal reads in the reader's language."""
    if new not in moves.get(old, frozenset()):
        raise Conflict.of(msg("error.state_change", what=what, old=old.value, new=new.value))


def next_step(kind: RequestKind, state: RequestState) -> ReviewStep | None:
    """Who acts next on a request of `kind` in `state` (None: it is decided)."""
    path = REVIEW_PATHS[kind]
    if state is RequestState.SUBMITTED:
        return path[0]
    if state is RequestState.RECOMMENDED:
        return ReviewStep.MANAGER
    return None


__all__ = [
    "AGREEMENT_MOVES",
    "AWARD_MOVES",
    "HOLDING_STATES",
    "NOTICE_MOVES",
    "REPORT_MOVES",
    "REQUEST_MOVES",
    "REVIEW_PATHS",
    "AccessTier",
    "AgreementState",
    "AwardState",
    "NoticeKind",
    "NoticeState",
    "OutcomeKind",
    "PermittedUse",
    "ReportKind",
    "ReportState",
    "RequestKind",
    "RequestState",
    "ReserveState",
    "ReviewStep",
    "check",
    "next_step",
]
