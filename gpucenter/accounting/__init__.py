"""Accounting: pure rules for rate cards, valuation, budgets, use-it-or-lose-it and reports.

No I/O here: the services in `gpucenter.services.accounting_*` load rows, call these
functions, and store what they decide, so every rule can be tested with hand-built inputs.
"""

from gpucenter.accounting.budget import THRESHOLDS, BurnDown, Enforcement, burn_down, newly_crossed
from gpucenter.accounting.rates import RateCard, Valuation, fiscal_year, month_key, value
from gpucenter.accounting.report import Dimension, Fact, ReportRow, aggregate
from gpucenter.accounting.useit import UseAssessment, UsePlan, assess

__all__ = [
    "THRESHOLDS",
    "BurnDown",
    "Dimension",
    "Enforcement",
    "Fact",
    "RateCard",
    "ReportRow",
    "UseAssessment",
    "UsePlan",
    "Valuation",
    "aggregate",
    "assess",
    "burn_down",
    "fiscal_year",
    "month_key",
    "newly_crossed",
    "value",
]
