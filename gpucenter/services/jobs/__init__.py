"""Job use cases: submission, listing, cancelling, logs, events, templates."""
