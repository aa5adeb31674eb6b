"""Domain types: frozen dataclasses, enums and state machines. No I/O, no framework imports."""
