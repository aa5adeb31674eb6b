"""gpucenter: the control plane of a national AI computing centre.

Programmes and allocations become quotas, quotas become fair scheduling of real jobs on real
clusters, and usage flows back into an accounting ledger.
"""

__version__ = "0.1.0"
