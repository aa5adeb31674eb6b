"""Progress and final reports, their reminders, and the hold an overdue report puts on a
project's new jobs where the programme says so; outcomes recorded against an award.

The hold is derived, not stored as a flag: a project is held while one of its reports with a
`hold_after` instant is past that instant and not submitted (`holds`). The scheduler asks
every pass, so submitting the report releases the jobs at the next pass, and nothing has to
remember to lift a hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gpucenter.allocation.lifecycle import (
    REPORT_MOVES,
    AwardState,
    OutcomeKind,
    ReportKind,
    ReportState,
    check,
)
from gpucenter.allocation.outcomes import OutcomeInput, check_outcome
from gpucenter.allocation.terms import check_answers, report_schedule, reporting_rules
from gpucenter.auth.permissions import Caller
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import Conflict, NotFound
from gpucenter.domain.ids import ProjectId
from gpucenter.domain.messages import msg
from gpucenter.persistence.tables_allocation import AwardRow, CallRow
from gpucenter.persistence.tables_awards import AwardReportRow, OutcomeRow
from gpucenter.services.awards.common import (
    SYSTEM,
    Who,
    award_row,
    call_of,
    is_pi,
    managers_of,
    move,
    notify,
    project_people,
    record,
    refuse,
    require_manager,
)

OPEN_STATES = (ReportState.DUE.value, ReportState.OVERDUE.value, ReportState.RETURNED.value)
RETURN_DAYS = 14  # a returned report is due again this many days later


def schedule(s: Session, award: AwardRow, call: CallRow, now: datetime) -> list[AwardReportRow]:
    """The reports an award owes, from the programme's reporting rules and its period."""
    if award.starts_at is None or award.ends_at is None:
        return []
    rules = reporting_rules(call.config)
    rows = []
    for due in report_schedule(as_utc(award.starts_at), as_utc(award.ends_at), rules):
        row = AwardReportRow(
            award_id=award.id,
            project_id=award.project_id,
            kind=due.kind.value,
            seq=due.seq,
            due_at=due.due_at,
            hold_after=_hold_after(due.due_at, rules.hold_when_overdue, rules.grace_days),
            state=ReportState.DUE.value,
            answers={},
        )
        s.add(row)
        rows.append(row)
    s.flush()
    return rows


def _hold_after(due: datetime, hold: bool, grace_days: int) -> datetime | None:
    return due + timedelta(days=grace_days) if hold else None


def _set(s: Session, row: AwardReportRow, new: ReportState, who: Who, now: datetime) -> None:
    old = ReportState(row.state)
    check(REPORT_MOVES, msg("thing.report", id=row.id), old, new)
    row.state = new.value
    s.flush()
    record(
        s,
        who,
        f"report.{new.value}",
        now,
        "award",
        row.award_id,
        {"report": row.id, "kind": row.kind, "seq": row.seq, "from": old, "to": new},
    )


def report_row(s: Session, report_id: int) -> AwardReportRow:
    row = s.get(AwardReportRow, report_id)
    if row is None:
        raise NotFound("report", report_id)
    return row


def _what(row: AwardReportRow) -> str:
    return "final report" if row.kind == ReportKind.FINAL else f"progress report {row.seq}"


def remind_and_mark(s: Session, now: datetime) -> tuple[int, int]:
    """Remind the project of reports falling due within the programme's reminder days, and
    mark reports past their date overdue (telling the PI and the managers, and that new jobs
    wait where the programme holds them). Returns (reminded, made overdue)."""
    reminded = overdue = 0
    rows = list(s.scalars(select(AwardReportRow).where(AwardReportRow.state.in_(OPEN_STATES))))
    for row in rows:
        award = award_row(s, row.award_id)
        call = call_of(s, award)
        rules = reporting_rules(call.config)
        due = as_utc(row.due_at)
        if due <= now and row.state != ReportState.OVERDUE:
            row.overdue_at = now
            _set(s, row, ReportState.OVERDUE, SYSTEM, now)
            held = " New jobs of the project wait until it is submitted." if row.hold_after else ""
            notify(
                s,
                [*project_people(s, award.project_id), *managers_of(s, call.programme_id)],
                f"[gpucenter] The {_what(row)} of award {award.id} is overdue",
                f"It was due {due:%Y-%m-%d}.{held}",
                now,
            )
            overdue += 1
        elif row.reminded_at is None and now < due <= now + timedelta(days=rules.remind_days):
            row.reminded_at = now
            notify(
                s,
                project_people(s, award.project_id),
                f"[gpucenter] The {_what(row)} of award {award.id} is due {due:%Y-%m-%d}",
                "Submit it from the award's page in the portal."
                + (" An overdue report holds the project's new jobs." if row.hold_after else ""),
                now,
            )
            reminded += 1
    s.flush()
    return reminded, overdue


def submit(
    s: Session, caller: Caller, report_id: int, answers: Mapping[str, str], now: datetime
) -> AwardReportRow:
    """The PI submits a report against the programme's form; an overdue report's hold on
    the project's jobs ends with it."""
    row = report_row(s, report_id)
    award = award_row(s, row.award_id)
    if not is_pi(s, caller, award):
        raise NotFound("report", report_id)
    if row.state not in OPEN_STATES:
        raise Conflict.of(msg("error.report_not_submittable", state=row.state))
    form = reporting_rules(call_of(s, award).config).form
    row.answers = check_answers(form, answers)
    row.submitted_by, row.submitted_at = caller.user_id, now
    held = row.hold_after is not None and as_utc(row.hold_after) <= now
    _set(s, row, ReportState.SUBMITTED, Who.of(caller), now)
    notify(
        s,
        managers_of(s, call_of(s, award).programme_id),
        f"[gpucenter] The {_what(row)} of award {award.id} was submitted",
        "Review it from the call's awards page."
        + (" The project's jobs run again." if held else ""),
        now,
    )
    return row


def review(
    s: Session, caller: Caller, report_id: int, accept: bool, note: str, now: datetime
) -> AwardReportRow:
    """The programme manager accepts a submitted report, or returns it for more (due again
    in two weeks). An accepted final report completes the award."""
    row = report_row(s, report_id)
    award = award_row(s, row.award_id)
    require_manager(s, caller, award, ("report", report_id))
    who = Who.of(caller)
    row.reviewed_by, row.reviewed_at, row.review_note = caller.user_id, now, note.strip()[:2000]
    if accept:
        _set(s, row, ReportState.ACCEPTED, who, now)
        if row.kind == ReportKind.FINAL and award.state == AwardState.ACTIVE:
            move(s, award, AwardState.COMPLETED, who, now, reason="final report accepted")
        return row
    rules = reporting_rules(call_of(s, award).config)
    row.due_at = now + timedelta(days=RETURN_DAYS)
    row.hold_after = _hold_after(row.due_at, rules.hold_when_overdue, rules.grace_days)
    row.submitted_at = None
    _set(s, row, ReportState.RETURNED, who, now)
    notify(
        s,
        project_people(s, award.project_id),
        f"[gpucenter] The {_what(row)} of award {award.id} was returned",
        f"{note.strip()}\nSubmit it again by {row.due_at:%Y-%m-%d}.",
        now,
    )
    return row


def holds(s: Session, now: datetime) -> dict[ProjectId, str]:
    """Projects whose new jobs wait, with the sentence each job shows: a report past its
    hold instant and not submitted, where the programme holds jobs for it."""
    rows = s.scalars(
        select(AwardReportRow)
        .where(
            AwardReportRow.hold_after.is_not(None),
            AwardReportRow.hold_after <= now,
            AwardReportRow.state.in_(OPEN_STATES),
        )
        .order_by(AwardReportRow.due_at, AwardReportRow.id)
    )
    out: dict[ProjectId, str] = {}
    for row in rows:
        out.setdefault(
            ProjectId(row.project_id),
            f"held: the {_what(row)} of award {row.award_id} was due "
            f"{as_utc(row.due_at):%Y-%m-%d}; new jobs of this project wait until it is submitted",
        )
    return out


def reports_of(s: Session, award: AwardRow) -> list[AwardReportRow]:
    stmt = select(AwardReportRow).where(AwardReportRow.award_id == award.id)
    return list(s.scalars(stmt.order_by(AwardReportRow.due_at, AwardReportRow.id)))


def record_outcome(
    s: Session,
    caller: Caller,
    award_id: int,
    raw: OutcomeInput,
    now: datetime,
    report_id: int | None = None,
) -> OutcomeRow:
    """A paper, model, patent, product or people trained, from the award's team."""
    award = award_row(s, award_id)
    if not (is_pi(s, caller, award) or award.project_id in caller.project_ids):
        refuse(s, caller, award, msg("error.outcomes_team_only"), ("award", award_id))
    if award.state not in (AwardState.ACTIVE, AwardState.COMPLETED):
        raise Conflict.of(msg("error.outcomes_award_inactive", award=award.id, state=award.state))
    kind, title, ident, count = check_outcome(raw)
    dup = s.scalar(
        select(OutcomeRow.id).where(
            OutcomeRow.award_id == award.id,
            OutcomeRow.kind == kind.value,
            OutcomeRow.identifier == ident,
            OutcomeRow.identifier != "",
        )
    )
    if dup is not None:
        raise Conflict.of(msg("error.outcome_duplicate", kind=kind.value, award=award.id))
    row = OutcomeRow(
        award_id=award.id,
        report_id=report_id,
        kind=kind.value,
        title=title,
        identifier=ident,
        count=count,
        recorded_by=caller.user_id,
        recorded_at=now,
    )
    s.add(row)
    s.flush()
    record(
        s,
        Who.of(caller),
        "outcome.record",
        now,
        "award",
        award.id,
        {"outcome": row.id, "kind": kind, "identifier": ident, "count": count},
    )
    return row


def outcomes_of(s: Session, award: AwardRow) -> list[OutcomeRow]:
    stmt = select(OutcomeRow).where(OutcomeRow.award_id == award.id)
    return list(s.scalars(stmt.order_by(OutcomeRow.id)))


def product_outcomes_since(s: Session, award: AwardRow, since: datetime | None) -> int:
    """Products or services recorded (a sign of commercial use for the monthly check)."""
    stmt = select(OutcomeRow.id).where(
        OutcomeRow.award_id == award.id, OutcomeRow.kind == OutcomeKind.PRODUCT.value
    )
    if since is not None:
        stmt = stmt.where(OutcomeRow.recorded_at >= since)
    return len(list(s.scalars(stmt)))


def owes_overdue(s: Session, award: AwardRow) -> bool:
    return (
        s.scalar(
            select(AwardReportRow.id).where(
                AwardReportRow.award_id == award.id,
                AwardReportRow.state == ReportState.OVERDUE.value,
            )
        )
        is not None
    )


def move_final(s: Session, award: AwardRow) -> None:
    """After an extension or renewal moved the award's end: its final report falls due
    the programme's days after the new end (unless already submitted)."""
    if award.ends_at is None:
        return
    rules = reporting_rules(call_of(s, award).config)
    for row in reports_of(s, award):
        if row.kind == ReportKind.FINAL and row.state in OPEN_STATES:
            row.due_at = as_utc(award.ends_at) + timedelta(days=rules.final_days)
            row.hold_after = _hold_after(row.due_at, rules.hold_when_overdue, rules.grace_days)
    s.flush()
