"""Programmes, calls and programme roles: the programme manager's set-up use cases.

Services take an open Session, the Caller and `now`, and do their own permission checks:
routes only authenticate. Everything that changes who may decide (roles) or what is decided
(calls) is written to the audit log in the same transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gpucenter.allocation import (
    CAPITAL_REGIONS,
    DEFAULT_RUBRIC,
    STRATEGIC_TECHNOLOGIES,
    ApplicantType,
    AwardKind,
    AwardPolicy,
    CallRules,
    Criterion,
    ShareRule,
    quarter_bounds,
    terms,
)
from gpucenter.allocation.model import CallState
from gpucenter.auth.permissions import Caller, Role
from gpucenter.domain.clock import as_utc
from gpucenter.domain.errors import Conflict, NotFound, PermissionDenied, ValidationError
from gpucenter.domain.messages import msg
from gpucenter.persistence import repositories as repo
from gpucenter.persistence.tables_allocation import CallCapacityRow, CallRow, ProgrammeRow
from gpucenter.persistence.tables_audit import RoleAssignmentRow
from gpucenter.services.identity import audit

_NAME = re.compile(r"^[a-z][a-z0-9_.-]{1,63}$")
PROGRAMME_ROLES = (Role.PROGRAMME_MANAGER, Role.REVIEWER)


def _name(field: str, value: str) -> str:
    if not _NAME.match(value):
        raise ValidationError.about(field, msg("error.name_format"))
    return value


def audit_event(
    s: Session,
    caller: Caller,
    action: str,
    now: datetime,
    kind: str,
    target: object,
    details: Mapping[str, Any] | None = None,
) -> None:
    audit.record(
        s,
        action,
        actor_id=caller.user_id,
        actor=caller.username,
        at=now,
        target_type=kind,
        target_id=target,
        details=details,
    )


def programme(s: Session, programme_id: int) -> ProgrammeRow:
    row = s.get(ProgrammeRow, programme_id)
    if row is None:
        raise NotFound("programme", programme_id)
    return row


def call_row(s: Session, call_id: int) -> CallRow:
    row = s.get(CallRow, call_id)
    if row is None:
        raise NotFound("call", call_id)
    return row


def require_manager(caller: Caller, programme_id: int) -> None:
    if not caller.has_role(Role.PROGRAMME_MANAGER, programme_id):
        raise PermissionDenied.of(msg("error.needs_programme_manager"))


def create_programme(
    s: Session, caller: Caller, name: str, owner: str, now: datetime, title: str = ""
) -> ProgrammeRow:
    """Centre admins create programmes; ministries then run them through their managers."""
    if not (caller.is_admin or caller.has_role(Role.CENTRE_ADMIN)):
        raise PermissionDenied.of(msg("error.programme_needs_admin"))
    if not owner.strip():
        raise ValidationError.about("owner", msg("error.programme_owner"))
    row = ProgrammeRow(name=_name("name", name), owner=owner.strip(), title=title, created_at=now)
    s.add(row)
    try:
        s.flush()
    except IntegrityError as exc:
        raise Conflict.of(msg("error.programme_exists", name=repr(name))) from exc
    audit_event(
        s, caller, "programme.create", now, "programme", row.id, {"name": name, "owner": owner}
    )
    return row


def list_programmes(s: Session) -> list[ProgrammeRow]:
    return list(s.scalars(select(ProgrammeRow).order_by(ProgrammeRow.id)))


def assign_role(
    s: Session, caller: Caller, programme_id: int, username: str, role: str, now: datetime
) -> RoleAssignmentRow:
    """Admins appoint managers and reviewers; a programme's managers appoint its reviewers."""
    programme(s, programme_id)
    try:
        wanted = Role(role)
    except ValueError:
        raise ValidationError.about("role", msg("error.programme_role")) from None
    if wanted not in PROGRAMME_ROLES:
        raise ValidationError.about("role", msg("error.programme_role"))
    if wanted is Role.PROGRAMME_MANAGER and not caller.is_admin:
        raise PermissionDenied.of(msg("error.appoint_needs_admin"))
    require_manager(caller, programme_id)
    user = repo.user_by_name(s, username)
    existing = s.scalar(
        select(RoleAssignmentRow).where(
            RoleAssignmentRow.user_id == user.id,
            RoleAssignmentRow.role == wanted.value,
            RoleAssignmentRow.scope_kind == "programme",
            RoleAssignmentRow.scope_id == programme_id,
        )
    )
    if existing is not None:
        return existing
    row = RoleAssignmentRow(
        user_id=user.id,
        role=wanted.value,
        scope_kind="programme",
        scope_id=programme_id,
        created_at=now,
    )
    s.add(row)
    s.flush()
    audit_event(
        s,
        caller,
        "programme.role.assign",
        now,
        "programme",
        programme_id,
        {"user": username, "role": wanted.value},
    )
    return row


def reviewer_ids(s: Session, programme_id: int) -> list[int]:
    return list(
        s.scalars(
            select(RoleAssignmentRow.user_id)
            .where(
                RoleAssignmentRow.role == Role.REVIEWER.value,
                RoleAssignmentRow.scope_kind == "programme",
                RoleAssignmentRow.scope_id == programme_id,
            )
            .order_by(RoleAssignmentRow.user_id)
        )
    )


@dataclass(frozen=True)
class CallSpec:
    """A call as a manager writes it (YAML/JSON); validated into CallRules and AwardPolicy."""

    name: str
    opens_at: datetime
    closes_at: datetime
    capacity: Mapping[str, Mapping[str, float]]  # gpu_type -> period -> GPU-hours
    title: str = ""
    config: Mapping[str, Any] | None = None


def _check_choices(values: Iterable[Any], allowed: list[str]) -> None:
    """Refuse a value of a call's setting that is not one of `allowed`, naming the choices
    (reported against config.eligible_types, where the refusal has always been reported)."""
    for value in values:
        if value not in allowed:
            raise ValidationError.about(
                "config.eligible_types",
                msg("error.config_choice", value=repr(value), allowed=", ".join(allowed)),
            )


def parse_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults and validate by building the domain objects (raises ValidationError)."""
    cfg: dict[str, Any] = {
        "eligible_types": [t.value for t in ApplicantType],
        "award_kinds": [k.value for k in AwardKind],
        "max_gpu_hours": None,
        "max_lease_gpus": None,
        "taxonomy": list(STRATEGIC_TECHNOLOGIES),
        "shares": [],
        "org_cap_share": None,
        "regional_bonus": 0.0,
        "capital_regions": list(CAPITAL_REGIONS),
        "min_score": 0.0,
        "reviewers_per_application": 3,
        "rubric": [{"name": c.name, "weight": c.weight} for c in DEFAULT_RUBRIC],
        "gpus": {},
        # After the award (gpucenter.allocation.terms): each section has its defaults there.
        "agreement": {},
        "reporting": {},
        "use_check": {},
        "changes": {},
        "tier": {},
        "reserve_size": None,
    }
    unknown = set(raw) - set(cfg)
    if unknown:
        raise ValidationError.about(
            "config", msg("error.settings_unknown", names=", ".join(sorted(unknown)))
        )
    cfg.update(raw)
    _check_choices(cfg["eligible_types"], [t.value for t in ApplicantType])
    _check_choices(cfg["award_kinds"], [k.value for k in AwardKind])
    if int(cfg["reviewers_per_application"]) < 1:
        raise ValidationError.about(
            "config.reviewers_per_application", msg("error.value_at_least", low=1)
        )
    policy_of(cfg)
    rubric_of(cfg)
    terms.check_config(cfg)
    return cfg


def policy_of(cfg: Mapping[str, Any]) -> AwardPolicy:
    try:
        shares = tuple(
            ShareRule(
                str(r["name"]),
                frozenset(ApplicantType(t) for t in r["applicant_types"]),
                r.get("min_share"),
                r.get("max_share"),
            )
            for r in cfg["shares"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationError.about(
            "config.shares", msg("error.share_fields", problem=str(exc))
        ) from None
    return AwardPolicy(
        shares=shares,
        org_cap_share=cfg["org_cap_share"],
        regional_bonus=float(cfg["regional_bonus"]),
        capital_regions=tuple(cfg["capital_regions"]),
        min_score=float(cfg["min_score"]),
    )


def rubric_of(cfg: Mapping[str, Any]) -> tuple[Criterion, ...]:
    try:
        return tuple(
            Criterion(str(c["name"]), float(c["weight"]), float(c.get("max_points", 10)))
            for c in cfg["rubric"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationError.about(
            "config.rubric", msg("error.criterion_fields", problem=str(exc))
        ) from None


def capacity_of(s: Session, call_id: int) -> dict[tuple[str, str], float]:
    rows = s.scalars(select(CallCapacityRow).where(CallCapacityRow.call_id == call_id))
    return {(r.gpu_type, r.period): r.gpu_hours for r in rows}


def rules_of(s: Session, call: CallRow) -> CallRules:
    cfg = call.config
    cap = capacity_of(s, call.id)
    return CallRules(
        opens_at=as_utc(call.opens_at),
        closes_at=as_utc(call.closes_at),
        eligible_types=frozenset(ApplicantType(t) for t in cfg["eligible_types"]),
        gpu_types=frozenset(t for t, _ in cap),
        periods=frozenset(p for _, p in cap),
        award_kinds=frozenset(AwardKind(k) for k in cfg["award_kinds"]),
        max_gpu_hours=cfg["max_gpu_hours"],
        max_lease_gpus=cfg["max_lease_gpus"],
        taxonomy=tuple(cfg["taxonomy"]),
    )


def create_call(
    s: Session, caller: Caller, programme_id: int, spec: CallSpec, now: datetime
) -> CallRow:
    """Open a call with its capacity pool and policy; the programme's managers only."""
    programme(s, programme_id)
    require_manager(caller, programme_id)
    if spec.closes_at <= spec.opens_at:
        raise ValidationError.about("closes_at", msg("error.closes_before_opens"))
    if not spec.capacity:
        raise ValidationError.about("capacity", msg("error.capacity_missing"))
    cfg = parse_config(spec.config or {})
    row = CallRow(
        programme_id=programme_id,
        name=_name("name", spec.name),
        title=spec.title or spec.name,
        opens_at=spec.opens_at,
        closes_at=spec.closes_at,
        state=CallState.OPEN,
        config=cfg,
        created_at=now,
    )
    s.add(row)
    try:
        s.flush()
    except IntegrityError as exc:
        raise Conflict.of(msg("error.call_exists", name=repr(spec.name))) from exc
    for gpu_type, periods in spec.capacity.items():
        for period, hours in periods.items():
            quarter_bounds(period)
            if not float(hours) > 0:
                raise ValidationError.about(
                    f"capacity.{gpu_type}.{period}", msg("error.value_positive")
                )
            s.add(
                CallCapacityRow(
                    call_id=row.id, gpu_type=gpu_type, period=period, gpu_hours=float(hours)
                )
            )
    s.flush()
    audit_event(
        s,
        caller,
        "call.create",
        now,
        "call",
        row.id,
        {"programme_id": programme_id, "name": spec.name},
    )
    return row


def list_calls(s: Session, programme_id: int | None = None) -> list[CallRow]:
    """Calls are public to every signed-in user: applicants need to find them."""
    stmt = select(CallRow).order_by(CallRow.id)
    if programme_id is not None:
        stmt = stmt.where(CallRow.programme_id == programme_id)
    return list(s.scalars(stmt))


__all__ = [
    "CallSpec",
    "assign_role",
    "audit_event",
    "call_row",
    "capacity_of",
    "create_call",
    "create_programme",
    "list_calls",
    "list_programmes",
    "parse_config",
    "policy_of",
    "programme",
    "require_manager",
    "reviewer_ids",
    "rubric_of",
    "rules_of",
]
