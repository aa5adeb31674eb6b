"""What a programme asks of its awards after the decision, read from a call's settings.

A call's config (one JSON document, validated on the way in) gains five sections; each has
defaults, so calls stored before they existed read the same as a call that leaves them out:

- `agreement`: whether awards need an accepted agreement, countersignature by the PI's
  organisation, days to accept, and the permitted use (research or commercial);
- `reporting`: progress reports so many months after the start (NAIRR asks at 1, 3 and 9),
  a final report so many days after the end, reminders, and whether an overdue report holds
  the project's new jobs;
- `use_check`: the monthly use-it-or-lose-it check (threshold, appeal window);
- `changes`: limits on extensions and supplements;
- `tier`: `reviewed` or `fast` (small awards decided by the manager within days).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from gpucenter.allocation.lifecycle import AccessTier, PermittedUse, ReportKind
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import msg


@dataclass(frozen=True, slots=True)
class AgreementRules:
    required: bool = True
    countersignature: bool = False
    acceptance_days: int = 14
    permitted_use: PermittedUse = PermittedUse.RESEARCH


@dataclass(frozen=True, slots=True)
class FormField:
    """One question of a programme's report form: free text, yes/no, or a number."""

    name: str
    kind: str = "text"  # text | yes_no | number
    label: str = ""  # shown as is for a programme's own questions
    required: bool = True


# The questions every report asks unless a programme sets its own form.
DEFAULT_FORM: tuple[FormField, ...] = (
    FormField("summary", "text"),
    FormField("next_steps", "text", required=False),
    FormField("commercial_use", "yes_no"),
)


@dataclass(frozen=True, slots=True)
class ReportingRules:
    progress_months: tuple[int, ...] = (1, 3, 9)
    final_days: int = 30
    remind_days: int = 7
    hold_when_overdue: bool = False
    grace_days: int = 0
    form: tuple[FormField, ...] = DEFAULT_FORM


@dataclass(frozen=True, slots=True)
class UseRules:
    min_ratio: float = 0.5
    appeal_days: int = 14


@dataclass(frozen=True, slots=True)
class ChangeRules:
    max_extension_days: int = 90
    max_supplement_share: float = 0.5  # of the award's GPU-hours


@dataclass(frozen=True, slots=True)
class TierRules:
    tier: AccessTier = AccessTier.REVIEWED
    decide_within_days: int = 5


def _section(cfg: Mapping[str, Any], name: str, allowed: set[str]) -> Mapping[str, Any]:
    raw = cfg.get(name) or {}
    if not isinstance(raw, Mapping):
        raise ValidationError.about(f"config.{name}", msg("error.value_mapping"))
    unknown = set(raw) - allowed
    if unknown:
        raise ValidationError.about(
            f"config.{name}", msg("error.settings_unknown", names=", ".join(sorted(unknown)))
        )
    return raw


def _days(raw: Mapping[str, Any], key: str, default: int, field: str, low: int = 0) -> int:
    try:
        value = int(raw.get(key, default))
    except (TypeError, ValueError):
        raise ValidationError.about(f"{field}.{key}", msg("error.value_whole_days")) from None
    if value < low:
        raise ValidationError.about(f"{field}.{key}", msg("error.value_at_least", low=low))
    return value


def agreement_rules(cfg: Mapping[str, Any]) -> AgreementRules:
    raw = _section(cfg, "agreement", {"required", "countersignature", "acceptance_days", "use"})
    try:
        use = PermittedUse(raw.get("use", PermittedUse.RESEARCH.value))
    except ValueError:
        raise ValidationError.about("config.agreement.use", msg("error.agreement_use")) from None
    return AgreementRules(
        bool(raw.get("required", True)),
        bool(raw.get("countersignature", False)),
        _days(raw, "acceptance_days", 14, "config.agreement", 1),
        use,
    )


def _form(raw: Any) -> tuple[FormField, ...]:
    if raw is None:
        return DEFAULT_FORM
    try:
        fields = tuple(
            FormField(
                str(f["name"]),
                str(f.get("kind", "text")),
                str(f.get("label", "")),
                bool(f.get("required", True)),
            )
            for f in raw
        )
    except (KeyError, TypeError, AttributeError):
        raise ValidationError.about("config.reporting.form", msg("error.question_name")) from None
    if not fields:
        raise ValidationError.about("config.reporting.form", msg("error.form_empty"))
    for f in fields:
        if f.kind not in ("text", "yes_no", "number"):
            raise ValidationError.about(
                "config.reporting.form", msg("error.question_type", name=f.name)
            )
    if len({f.name for f in fields}) != len(fields):
        raise ValidationError.about("config.reporting.form", msg("error.form_names_differ"))
    return fields


def reporting_rules(cfg: Mapping[str, Any]) -> ReportingRules:
    keys = {
        "progress_months",
        "final_days",
        "remind_days",
        "hold_when_overdue",
        "grace_days",
        "form",
    }
    raw = _section(cfg, "reporting", keys)
    try:
        months = tuple(sorted({int(m) for m in raw.get("progress_months", (1, 3, 9))}))
    except (TypeError, ValueError):
        raise ValidationError.about(
            "config.reporting.progress_months", msg("error.progress_months_list")
        ) from None
    if any(m < 1 for m in months):
        raise ValidationError.about(
            "config.reporting.progress_months", msg("error.progress_months_start")
        )
    return ReportingRules(
        months,
        _days(raw, "final_days", 30, "config.reporting"),
        _days(raw, "remind_days", 7, "config.reporting"),
        bool(raw.get("hold_when_overdue", False)),
        _days(raw, "grace_days", 0, "config.reporting"),
        _form(raw.get("form")),
    )


def use_rules(cfg: Mapping[str, Any]) -> UseRules:
    raw = _section(cfg, "use_check", {"min_ratio", "appeal_days"})
    try:
        ratio = float(raw.get("min_ratio", 0.5))
    except (TypeError, ValueError):
        ratio = -1.0
    if not 0 < ratio <= 1:
        raise ValidationError.about("config.use_check.min_ratio", msg("error.value_fraction"))
    return UseRules(ratio, _days(raw, "appeal_days", 14, "config.use_check", 1))


def change_rules(cfg: Mapping[str, Any]) -> ChangeRules:
    raw = _section(cfg, "changes", {"max_extension_days", "max_supplement_share"})
    try:
        share = float(raw.get("max_supplement_share", 0.5))
    except (TypeError, ValueError):
        share = -1.0
    if not 0 <= share <= 1:
        raise ValidationError.about(
            "config.changes.max_supplement_share", msg("error.value_between", low=0, high=1)
        )
    return ChangeRules(_days(raw, "max_extension_days", 90, "config.changes"), share)


def tier_rules(cfg: Mapping[str, Any]) -> TierRules:
    raw = _section(cfg, "tier", {"kind", "decide_within_days"})
    try:
        tier = AccessTier(raw.get("kind", AccessTier.REVIEWED.value))
    except ValueError:
        raise ValidationError.about("config.tier.kind", msg("error.tier_kind")) from None
    return TierRules(tier, _days(raw, "decide_within_days", 5, "config.tier", 1))


def check_config(cfg: Mapping[str, Any]) -> None:
    """Validate every after-award section of a call's config (raises ValidationError)."""
    agreement_rules(cfg)
    reporting_rules(cfg)
    use_rules(cfg)
    change_rules(cfg)
    tier_rules(cfg)
    size = cfg.get("reserve_size")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise ValidationError.about("config.reserve_size", msg("error.value_whole_or_none"))


def add_months(when: datetime, months: int) -> datetime:
    """`when` plus whole calendar months, clamped to the month's last day (Jan 31 + 1 =
    Feb 28), as programmes count report dates."""
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    nxt = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=when.tzinfo)
    last = (nxt - timedelta(days=1)).day
    return when.replace(year=year, month=month, day=min(when.day, last))


@dataclass(frozen=True, slots=True)
class DueReport:
    kind: ReportKind
    seq: int
    due_at: datetime


def report_schedule(start: datetime, end: datetime, rules: ReportingRules) -> list[DueReport]:
    """The reports an award owes: a progress report `m` months after its start for each of
    the programme's months that falls before its end, and a final report after the end."""
    out = [
        DueReport(ReportKind.PROGRESS, i + 1, add_months(start, m))
        for i, m in enumerate(rules.progress_months)
        if add_months(start, m) < end
    ]
    out.append(DueReport(ReportKind.FINAL, 0, end + timedelta(days=rules.final_days)))
    return out


def check_answers(form: tuple[FormField, ...], answers: Mapping[str, str]) -> dict[str, str]:
    """A report's answers against its form: required questions answered, yes/no and
    numbers well formed. Returns the cleaned answers (unknown keys dropped)."""
    out: dict[str, str] = {}
    for f in form:
        value = str(answers.get(f.name, "")).strip()
        if not value:
            if f.required:
                raise ValidationError.about(f.name, msg("error.answer_required"))
            continue
        if f.kind == "yes_no" and value not in ("yes", "no"):
            raise ValidationError.about(f.name, msg("error.answer_yes_no"))
        if f.kind == "number":
            try:
                float(value)
            except ValueError:
                raise ValidationError.about(f.name, msg("error.answer_number")) from None
        out[f.name] = value[:20_000]
    return out


__all__ = [
    "DEFAULT_FORM",
    "AgreementRules",
    "ChangeRules",
    "DueReport",
    "FormField",
    "ReportingRules",
    "TierRules",
    "UseRules",
    "add_months",
    "agreement_rules",
    "change_rules",
    "check_answers",
    "check_config",
    "report_schedule",
    "reporting_rules",
    "tier_rules",
    "use_rules",
]
