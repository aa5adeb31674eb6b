"""The architecture's import rules: domain/ and core/ stay pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gpucenter"
FORBIDDEN = (
    "gpucenter.persistence",
    "gpucenter.api",
    "gpucenter.cli",
    "gpucenter.web",
    "gpucenter.dispatch",
    "gpucenter.services",
    "gpucenter.sim",
    "sqlalchemy",
    "fastapi",
    "starlette",
    "httpx",
    "typer",
    "alembic",
)
ALLOWED_INSIDE = {"domain": ("gpucenter.domain",), "core": ("gpucenter.domain", "gpucenter.core")}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("layer", ["domain", "core"])
def test_pure_layers_import_nothing_from_outer_layers(layer: str) -> None:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files, f"no modules found in {layer}/"
    offences = []
    for path in files:
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                offences.append(f"{path.relative_to(PACKAGE)} imports {name}")
            if name.startswith("gpucenter.") and not name.startswith(ALLOWED_INSIDE[layer]):
                offences.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert offences == []


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from sqlalchemy.orm import Session\nimport gpucenter.app\n")
    assert _imports(bad) == ["sqlalchemy.orm", "gpucenter.app"]
