"""Identities, credentials and permission checks (pure functions where possible)."""
