"""Where each project stands today: its current allocations, their GPU-hours and programmes.

One reading for every consumer that places a project under a programme or weighs it by what
it was granted: the fair-share tree the scheduler ranks with, and the account tree synced to
Slurm sites. A project's programme is the one whose current allocations give it the most
GPU-hours (ties: by name; allocations made directly by the centre have no programme).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.domain.allocations import AllocationState
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import AllocationRow
from gpucenter.persistence.tables_allocation import AwardRow, CallRow, ProgrammeRow

__all__ = ["ProjectStanding", "programme_ids", "project_standings"]


@dataclass(slots=True)
class ProjectStanding:
    """A project's current allocations, as the share trees need them."""

    hours: float = 0.0
    by_programme: dict[str | None, float] = field(default_factory=lambda: defaultdict(float))
    states: list[tuple[AllocationState, int | None]] = field(default_factory=list)
    """Each current allocation's state and the id of the programme it came from."""

    @property
    def programme(self) -> str | None:
        """The programme the project sits under (None: allocations made directly)."""
        if not self.by_programme:
            return None
        return max(self.by_programme.items(), key=lambda kv: (kv[1], kv[0] or ""))[0]


def project_standings(
    s: Session, now: datetime, gpu_types: Sequence[str] = ()
) -> dict[int, ProjectStanding]:
    """Every project with a current allocation at `now` (for `gpu_types`, when given: a site
    counts only allocations for the GPU types it has, and general ones)."""
    names = {p.id: p.name for p in s.scalars(select(ProgrammeRow))}
    stmt = select(AllocationRow).where(repo.current_allocation(now)).order_by(AllocationRow.id)
    allocations = [
        a
        for a in s.scalars(stmt)
        if not (gpu_types and a.gpu_type is not None and a.gpu_type not in gpu_types)
    ]
    programme_of = programme_ids(s, allocations)
    standings: dict[int, ProjectStanding] = defaultdict(ProjectStanding)
    for alloc in allocations:
        programme_id = programme_of[alloc.id]
        standing = standings[alloc.project_id]
        standing.hours += alloc.gpu_seconds / 3600
        name = names.get(programme_id) if programme_id is not None else None
        standing.by_programme[name] += alloc.gpu_seconds / 3600
        standing.states.append((AllocationState(alloc.state), programme_id))
    return dict(standings)


def programme_ids(s: Session, allocations: Sequence[AllocationRow]) -> dict[int, int | None]:
    """Allocation id -> the programme it was awarded under (None: made directly), in one
    query for all of them."""
    awards = {a.award_id for a in allocations if a.award_id is not None}
    programme_of_award: dict[int, int] = {}
    if awards:
        rows = s.execute(
            select(AwardRow.id, CallRow.programme_id)
            .join(CallRow, CallRow.id == AwardRow.call_id)
            .where(AwardRow.id.in_(awards))
        )
        programme_of_award = {award_id: programme_id for award_id, programme_id in rows}
    return {
        a.id: programme_of_award.get(a.award_id) if a.award_id is not None else None
        for a in allocations
    }
