"""The `gpucenter` command line (Typer)."""
