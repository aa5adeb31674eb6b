"""After the award: agreements, the reserve list and re-offers, monthly use checks, reports
and outcomes, change requests and the fast tier.

A package of its own, above `services.programmes` (calls, applications, review, rounds) and
`services.accounting` (ledger, budgets, use assessments), which it uses and which never use
it: an award's life after the decision needs both, and neither needs to know about it.
`actions` opens the transactions for the API and the portal, `portal` reads pages, and
`periodic` is what the scheduler's leader runs.
"""
