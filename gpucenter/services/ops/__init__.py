"""Operations: overview figures, portal queries, readiness, metrics, demo data."""
