"""Every table module, imported once, so that `Base.metadata` knows the whole schema.

Each area keeps its tables in its own module (`tables.py`, `tables_<area>.py`); Alembic's
environment and the schema test import this module rather than listing them by hand.
"""

from __future__ import annotations

import importlib
import pkgutil

import gpucenter.persistence as _package
from gpucenter.persistence.tables import Base

for _info in sorted(pkgutil.iter_modules(_package.__path__), key=lambda m: m.name):
    if _info.name == "tables" or _info.name.startswith("tables_"):
        importlib.import_module(f"gpucenter.persistence.{_info.name}")

metadata = Base.metadata

__all__ = ["Base", "metadata"]
