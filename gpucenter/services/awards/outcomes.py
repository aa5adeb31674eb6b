"""The ministry's outcome report: papers, models, patents, products and people trained,
counted by programme, applicant type, region and strategic field.

Facts are read in one query (outcomes are few: thousands, not millions) with their award's
attributes; counting is `allocation.outcomes.count_outcomes`. Who may read it is the usage
reports' rule (`report_scope`): centre admins everything, a programme manager their
programmes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.allocation.lifecycle import OutcomeKind
from gpucenter.allocation.model import STRATEGIC_TECHNOLOGIES
from gpucenter.allocation.outcomes import (
    OutcomeDimension,
    OutcomeFact,
    OutcomeRow,
    count_outcomes,
)
from gpucenter.auth.permissions import Caller
from gpucenter.persistence.tables import OrganisationRow
from gpucenter.persistence.tables_allocation import ApplicationRow, AwardRow, CallRow, ProgrammeRow
from gpucenter.persistence.tables_awards import OutcomeRow as OutcomeTable
from gpucenter.services.accounting.reports import report_scope

NONE_LABEL = "(none)"
_STRATEGIC = frozenset(STRATEGIC_TECHNOLOGIES)


def outcome_facts(s: Session, caller: Caller) -> list[OutcomeFact]:
    """Every recorded outcome the caller may report on, with its award's attributes."""
    scope = report_scope(caller)
    stmt = (
        select(
            OutcomeTable.kind,
            OutcomeTable.count,
            ProgrammeRow.name,
            ProgrammeRow.id,
            OrganisationRow.kind,
            ApplicationRow.region,
            ApplicationRow.tags,
        )
        .join(AwardRow, AwardRow.id == OutcomeTable.award_id)
        .join(CallRow, CallRow.id == AwardRow.call_id)
        .join(ProgrammeRow, ProgrammeRow.id == CallRow.programme_id)
        .join(ApplicationRow, ApplicationRow.id == AwardRow.application_id)
        .join(OrganisationRow, OrganisationRow.id == ApplicationRow.organisation_id)
    )
    out = []
    for kind, count, programme, pid, org_kind, region, tags in s.execute(stmt):
        if scope.programme_ids is not None and pid not in scope.programme_ids:
            continue
        field = next((t for t in (tags or []) if t in _STRATEGIC), NONE_LABEL)
        out.append(
            OutcomeFact(
                OutcomeKind(kind), int(count), programme, org_kind, region or NONE_LABEL, field
            )
        )
    return out


def outcome_report(
    s: Session, caller: Caller, dims: Sequence[OutcomeDimension]
) -> list[OutcomeRow]:
    return count_outcomes(outcome_facts(s, caller), dims)


def outcome_records(
    s: Session, caller: Caller, dims: Sequence[OutcomeDimension]
) -> list[dict[str, Any]]:
    """The same report as flat records, for CSV, XLSX and JSON downloads."""
    return [r.flat() for r in outcome_report(s, caller, dims)]
