"""Accounting use cases: the ledger, budgets, reports, use-it-or-lose-it."""
