"""Outcomes of awards (papers, models, patents, products, people trained) and how the
ministry counts them: by programme, applicant type, region and strategic field.

An outcome is checked when it is recorded (a paper needs a DOI, a patent its number, people
trained a count), so that the counts a ministry reads are counts of things that can be
looked up. Counting is a pure fold over facts, like the usage reports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from gpucenter.allocation.lifecycle import OutcomeKind
from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import msg

DOI = re.compile(r"^10\.\d{4,9}/\S+$")
_URL = re.compile(r"^https?://\S+$")


class OutcomeDimension(StrEnum):
    PROGRAMME = "programme"
    APPLICANT_TYPE = "applicant_type"
    REGION = "region"
    STRATEGIC_FIELD = "strategic_field"


@dataclass(frozen=True, slots=True)
class OutcomeInput:
    kind: str
    title: str
    identifier: str = ""
    count: int = 1


def check_outcome(raw: OutcomeInput) -> tuple[OutcomeKind, str, str, int]:
    """(kind, title, identifier, count) once the outcome is well formed; a DOI is stored
    without its https://doi.org/ prefix so that the same paper is counted once."""
    try:
        kind = OutcomeKind(raw.kind)
    except ValueError:
        allowed = ", ".join(k.value for k in OutcomeKind)
        raise ValidationError.about("kind", msg("error.outcome_kind", allowed=allowed)) from None
    title = raw.title.strip()
    ident = raw.identifier.strip()
    if kind is not OutcomeKind.PEOPLE_TRAINED and not title:
        raise ValidationError.about("title", msg("error.outcome_title_missing"))
    if len(title) > 500 or len(ident) > 500:
        raise ValidationError.about("title", msg("error.outcome_title_long"))
    count = 1
    if kind is OutcomeKind.PAPER:
        ident = re.sub(r"^(https?://(dx\.)?doi\.org/|doi:)", "", ident, flags=re.I)
        if not DOI.match(ident):
            raise ValidationError.about("identifier", msg("error.outcome_doi"))
    elif kind is OutcomeKind.PATENT:
        if not re.search(r"\d{4,}", ident):
            raise ValidationError.about("identifier", msg("error.outcome_patent"))
    elif kind is OutcomeKind.MODEL:
        if not ident:
            raise ValidationError.about("identifier", msg("error.outcome_model_url"))
        if not (_URL.match(ident) or "/" in ident):
            raise ValidationError.about("identifier", msg("error.outcome_model_name"))
    elif kind is OutcomeKind.PEOPLE_TRAINED:
        if raw.count < 1 or raw.count > 100_000:
            raise ValidationError.about("count", msg("error.outcome_trained"))
        count = raw.count
        title = title or "people trained"
    return kind, title, ident, count


@dataclass(frozen=True, slots=True)
class OutcomeFact:
    """One recorded outcome with its award's reporting attributes."""

    kind: OutcomeKind
    count: int
    programme: str
    applicant_type: str
    region: str
    strategic_field: str


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    key: dict[str, str]
    counts: dict[str, int]  # outcome kind -> number (people trained: people, others: items)

    def flat(self) -> dict[str, object]:
        """One flat record for CSV, XLSX and JSON alike, every kind a column."""
        return {**self.key, **{k.value: self.counts.get(k.value, 0) for k in OutcomeKind}}


def count_outcomes(
    facts: Iterable[OutcomeFact], dims: Sequence[OutcomeDimension]
) -> list[OutcomeRow]:
    """Outcomes grouped by `dims`, counted per kind (people trained: summed counts)."""
    sums: dict[tuple[str, ...], dict[str, int]] = {}
    for f in facts:
        key = tuple(str(getattr(f, d.value)) for d in dims)
        acc = sums.setdefault(key, {})
        acc[f.kind.value] = acc.get(f.kind.value, 0) + f.count
    return [
        OutcomeRow(dict(zip([d.value for d in dims], k, strict=True)), counts)
        for k, counts in sorted(sums.items())
    ]


def parse_outcome_dimensions(names: Iterable[str]) -> list[OutcomeDimension]:
    dims: list[OutcomeDimension] = []
    for name in names:
        try:
            dims.append(OutcomeDimension(name.strip()))
        except ValueError:
            allowed = ", ".join(d.value for d in OutcomeDimension)
            raise ValidationError.about(
                "by", msg("error.outcome_dimension", name=repr(name), allowed=allowed)
            ) from None
    return dims


__all__ = [
    "OutcomeDimension",
    "OutcomeFact",
    "OutcomeInput",
    "OutcomeRow",
    "check_outcome",
    "count_outcomes",
    "parse_outcome_dimensions",
]
