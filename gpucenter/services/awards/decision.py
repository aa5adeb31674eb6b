"""A call's decision with what follows it: every award offered on the call's terms (its
allocations pending until the agreement is in force), and the reserve list kept.

Why a use case of its own rather than a step inside `programmes.awards.decide`: the round
(optimise, override, decide) is the programme's business and stays where it was; what an
award then is (an offer, an agreement, a place on the reserve list) is this package's, and
`programmes` must not depend on it. Entry points decide through here.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from gpucenter.auth.permissions import Caller
from gpucenter.domain.allocations import AllocationState
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import msg
from gpucenter.persistence.tables_allocation import AwardRow
from gpucenter.services.awards import agreements, reserve
from gpucenter.services.awards.common import Who
from gpucenter.services.programmes import awards as rounds
from gpucenter.services.programmes import calls as prog


def decide(
    s: Session, caller: Caller, run_id: int, now: datetime, reason: str = ""
) -> list[AwardRow]:
    """Decide a round: awards (offered), projects, pending allocations and leases, the
    agreements to accept, and the ranked reserve list, in one transaction."""
    run = rounds.get_run(s, caller, run_id)
    if run.purpose != "round":
        raise ValidationError.about("run", msg("error.run_is_reoffer", run=run_id))
    made = rounds.decide(s, caller, run_id, now, reason, initial=AllocationState.PENDING)
    who = Who.of(caller)
    for award in made:
        agreements.offer(s, who, award, now)
    reserve.build(s, who, prog.call_row(s, run.call_id), now)
    return made
