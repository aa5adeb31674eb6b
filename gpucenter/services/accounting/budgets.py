"""Budgets: burn-down per allocation, alerts at 50/80/100% and enforcement at 100%.

`check_budgets` is what the scheduler loop calls. It is idempotent: an alert is a row unique
by (allocation, threshold), so each threshold fires once per allocation however often the
loop runs (and a second server racing the leader loses on the constraint, not with a second
mail). Members get an in-app notification at once; e-mail goes out from `deliver_email`,
after the commit, so a slow or failing mail server never holds up accounting.
"""

from __future__ import annotations

import logging
import os
import smtplib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from gpucenter.accounting.budget import (
    DEFAULT_ENFORCEMENT,
    BurnDown,
    Enforcement,
    burn_down,
    newly_crossed,
    used_fraction,
)
from gpucenter.auth.permissions import Caller, Role
from gpucenter.domain.allocations import AllocationState
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import NotFound, PermissionDenied, ValidationError
from gpucenter.domain.jobs import JobState
from gpucenter.domain.messages import msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables import AllocationRow, JobRow, MembershipRow, ProjectRow, UserRow
from gpucenter.persistence.tables_accounting import (
    BudgetAlertRow,
    BudgetPolicyRow,
    NotificationRow,
)
from gpucenter.services.accounting.ledger import programme_of_allocation
from gpucenter.services.identity import audit

log = logging.getLogger(__name__)
BURN_WINDOW = timedelta(days=7)
# Notifications e-mailed as well as shown in the portal: budget alerts, and what happens to
# an award (offers, deadlines, reports, reclaims; services/awards writes kind 'award').
EMAILED_KINDS = ("budget", "award")


@dataclass(frozen=True, slots=True)
class Alert:
    allocation_id: int
    project: str
    threshold: int
    used_fraction: float
    action: str


def enforcement_for(s: Session, programme_id: int | None) -> Enforcement:
    if programme_id is None:
        return DEFAULT_ENFORCEMENT
    row = s.get(BudgetPolicyRow, programme_id)
    return DEFAULT_ENFORCEMENT if row is None else Enforcement(row.on_exhausted)


def set_enforcement(
    s: Session, caller: Caller, programme_id: int, action: str, now: datetime
) -> BudgetPolicyRow:
    """A programme's managers choose what 100% means for its allocations."""
    if not caller.has_role(Role.PROGRAMME_MANAGER, programme_id):
        raise PermissionDenied.of(msg("error.needs_programme_manager"))
    try:
        value = Enforcement(action)
    except ValueError:
        raise ValidationError.about("on_exhausted", msg("error.on_exhausted")) from None
    row = s.get(BudgetPolicyRow, programme_id)
    if row is None:
        row = BudgetPolicyRow(programme_id=programme_id, on_exhausted=value.value, updated_at=now)
        s.add(row)
    row.on_exhausted, row.updated_at = value.value, now
    s.flush()
    audit.record(
        s,
        "budget.enforcement",
        actor_id=caller.user_id,
        actor=caller.username,
        at=now,
        target_type="programme",
        target_id=programme_id,
        details={"on_exhausted": value.value},
    )
    return row


def check_budgets(s: Session, now: datetime) -> list[Alert]:
    """Raise each newly crossed threshold once; enforce at 100%. Returns the new alerts."""
    allocs = list(s.scalars(select(AllocationRow).where(repo.current_allocation(now))))
    if not allocs:
        return []
    used = repo.charged_gpu_seconds(s, [a.id for a in allocs])
    raised: dict[int, set[int]] = {}
    for aid, threshold in s.execute(
        select(BudgetAlertRow.allocation_id, BudgetAlertRow.threshold).where(
            BudgetAlertRow.allocation_id.in_([a.id for a in allocs])
        )
    ):
        raised.setdefault(aid, set()).add(threshold)
    alerts: list[Alert] = []
    for alloc in allocs:
        frac = used_fraction(used.get(alloc.id, 0.0), alloc.gpu_seconds)
        for threshold in newly_crossed(frac, raised.get(alloc.id, set())):
            alert = _raise(s, alloc, threshold, frac, now)
            if alert is not None:
                alerts.append(alert)
    return alerts


def _raise(
    s: Session, alloc: AllocationRow, threshold: int, frac: float, now: datetime
) -> Alert | None:
    action = "notify"
    if threshold >= 100:
        action = enforcement_for(s, programme_of_allocation(s, alloc)).value
    try:
        with s.begin_nested():
            s.add(
                BudgetAlertRow(
                    allocation_id=alloc.id,
                    threshold=threshold,
                    used_fraction=frac,
                    action=action,
                    raised_at=now,
                )
            )
    except IntegrityError:
        return None  # another server raised it first
    project = s.get(ProjectRow, alloc.project_id)
    name = project.name if project is not None else str(alloc.project_id)
    moved = _enforce(s, alloc, Enforcement(action)) if threshold >= 100 else 0
    subject = f"[gpucenter] allocation {alloc.id} of {name} has used {frac:.0%} of its GPU-hours"
    body = (
        f"Allocation {alloc.id} ({name}) has used {frac:.1%} of "
        f"{alloc.gpu_seconds / 3600:.1f} GPU-hours; it ends {as_utc(alloc.ends_at):%Y-%m-%d}."
    )
    if threshold >= 100:
        body += (
            " It is now exhausted: new jobs wait."
            if action == Enforcement.HOLD
            else f" It is now exhausted: {moved} pending job(s) run opportunistically "
            "(on idle GPUs, preemptible)."
        )
    notify_project(s, alloc.project_id, "budget", subject, body, now)
    audit.record(
        s,
        f"budget.alert.{threshold}",
        actor_id=None,
        actor="system",
        at=now,
        target_type="allocation",
        target_id=alloc.id,
        details={"used_fraction": round(frac, 6), "action": action, "jobs_moved": moved},
    )
    return Alert(alloc.id, name, threshold, frac, action)


def _enforce(s: Session, alloc: AllocationRow, action: Enforcement) -> int:
    """Mark the allocation exhausted; with OPPORTUNISTIC move its pending jobs to that QoS."""
    alloc.state = AllocationState.EXHAUSTED
    if action is not Enforcement.OPPORTUNISTIC:
        return 0
    result = s.execute(
        update(JobRow)
        .where(
            JobRow.allocation_id == alloc.id,
            JobRow.state == JobState.PENDING.value,
            JobRow.qos != "opportunistic",
        )
        .values(qos="opportunistic")
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def notify_project(
    s: Session, project_id: int, kind: str, subject: str, body: str, now: datetime
) -> int:
    """An in-app notification to every member of the project (PI and members)."""
    users = list(
        s.scalars(select(MembershipRow.user_id).where(MembershipRow.project_id == project_id))
    )
    for uid in users:
        s.add(NotificationRow(user_id=uid, kind=kind, subject=subject, body=body, created_at=now))
    s.flush()
    return len(users)


def notifications(s: Session, caller: Caller, unread_only: bool = False) -> list[NotificationRow]:
    stmt = select(NotificationRow).where(NotificationRow.user_id == caller.user_id)
    if unread_only:
        stmt = stmt.where(NotificationRow.read_at.is_(None))
    return list(s.scalars(stmt.order_by(NotificationRow.id.desc()).limit(200)))


def mark_read(s: Session, caller: Caller, notification_id: int, now: datetime) -> None:
    row = s.get(NotificationRow, notification_id)
    if row is None or row.user_id != caller.user_id:
        raise NotFound("notification", notification_id)
    row.read_at = row.read_at or now


# -- e-mail --------------------------------------------------------------------------------


class Mailer(Protocol):
    def send(self, to: str, subject: str, body: str) -> None: ...


@dataclass(frozen=True, slots=True)
class SmtpMailer:
    """SMTP from GPUCENTER_SMTP_* variables; `domain` turns usernames into addresses."""

    host: str
    port: int = 587
    sender: str = "gpucenter@localhost"
    user: str = ""
    password: str = ""
    starttls: bool = True
    domain: str = ""

    @classmethod
    def from_env(cls) -> SmtpMailer | None:
        """None when no SMTP host is configured: notifications stay in-app only."""
        env = os.environ
        host = env.get("GPUCENTER_SMTP_HOST", "")
        if not host:
            return None
        return cls(
            host=host,
            port=int(env.get("GPUCENTER_SMTP_PORT", "587")),
            sender=env.get("GPUCENTER_SMTP_FROM", "gpucenter@localhost"),
            user=env.get("GPUCENTER_SMTP_USER", ""),
            password=env.get("GPUCENTER_SMTP_PASSWORD", ""),
            starttls=env.get("GPUCENTER_SMTP_STARTTLS", "true").lower() in ("1", "true", "yes"),
            domain=env.get("GPUCENTER_SMTP_DOMAIN", ""),
        )

    def send(self, to: str, subject: str, body: str) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.sender, to, subject
        msg.set_content(body)
        with smtplib.SMTP(self.host, self.port, timeout=10) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.user:
                smtp.login(self.user, self.password)
            smtp.send_message(msg)


def address_of(user: UserRow, domain: str) -> str | None:
    if "@" in user.username:
        return user.username
    return f"{user.username}@{domain}" if domain else None


def deliver_email(
    sessions: sessionmaker[Session], mailer: Mailer, now: datetime, domain: str = ""
) -> int:
    """Send notifications not yet e-mailed; each is marked once its mail was accepted."""
    sent = 0
    with sessions.begin() as s:
        rows = list(
            s.scalars(
                select(NotificationRow)
                .where(
                    NotificationRow.emailed_at.is_(None), NotificationRow.kind.in_(EMAILED_KINDS)
                )
                .order_by(NotificationRow.id)
                .limit(100)
            )
        )
        for row in rows:
            user = s.get(UserRow, row.user_id)
            to = address_of(user, domain) if user is not None else None
            if to is None:
                row.emailed_at = now  # nowhere to send it: in-app only
                continue
            try:
                mailer.send(to, row.subject, row.body)
            except (OSError, smtplib.SMTPException) as exc:
                log.warning("notification mail to %s failed, will retry: %s", to, exc)
                break
            row.emailed_at, sent = now, sent + 1
    return sent


# -- burn-down -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetView:
    allocation_id: int
    project: str
    state: str
    starts_at: datetime
    ends_at: datetime
    burn: BurnDown
    alerts: list[int]


def budgets(
    s: Session, caller: Caller, now: datetime, project_ids: Sequence[int] | None = None
) -> list[BudgetView]:
    """Burn-down of the allocations the caller may see: members their projects', centre
    admins and programme managers any (optionally narrowed to `project_ids`)."""
    stmt = select(AllocationRow, ProjectRow.name).join(
        ProjectRow, ProjectRow.id == AllocationRow.project_id
    )
    sees_all = caller.is_centre_admin or any(r == Role.PROGRAMME_MANAGER for r, _ in caller.roles)
    if not sees_all:
        stmt = stmt.where(AllocationRow.project_id.in_(list(caller.project_ids)))
    if project_ids is not None:
        stmt = stmt.where(AllocationRow.project_id.in_(list(project_ids)))
    rows = list(s.execute(stmt.order_by(AllocationRow.id)))
    ids = [a.id for a, _ in rows]
    used = repo.charged_gpu_seconds(s, ids)
    recent = repo.charged_gpu_seconds(s, ids, since=now - BURN_WINDOW)
    alerts: dict[int, list[int]] = {}
    if ids:
        for aid, t in s.execute(
            select(BudgetAlertRow.allocation_id, BudgetAlertRow.threshold)
            .where(BudgetAlertRow.allocation_id.in_(ids))
            .order_by(BudgetAlertRow.threshold)
        ):
            alerts.setdefault(aid, []).append(t)
    return [
        BudgetView(
            a.id,
            name,
            a.state,
            as_utc(a.starts_at),
            as_utc(a.ends_at),
            burn_down(
                a.gpu_seconds,
                used.get(a.id, 0.0),
                recent.get(a.id, 0.0),
                BURN_WINDOW,
                now,
                as_utc(a.ends_at),
            ),
            alerts.get(a.id, []),
        )
        for a, name in rows
    ]


__all__ = [
    "SmtpMailer",
    "budgets",
    "check_budgets",
    "deliver_email",
    "enforcement_for",
    "mark_read",
    "notifications",
    "set_enforcement",
]
