"""The scheduling cycle: load, decide with the core, persist, dispatch."""
