"""Kubernetes sites: settings, and namespaces, quotas, queues and roles synced from allocations."""
