"""Use cases that join the rest: load -> snapshot -> core -> persist -> dispatch."""
