"""The architecture's import rules are import-linter contracts in pyproject.toml, checked by
`make lint` (`lint-imports`). This test guards the guard: the contracts the design relies on
are configured, they hold on the tree, and the checker really fails when a page imports a
table row (a planted import in a copy of the package), so a broken set-up cannot pass
silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
EXPECTED = {
    "Layers: entry points, HTTP, use cases, site kinds and rules, core, domain",
    "The pure layers (core, domain) import no framework and no I/O library",
    "Routes and pages reach the database through services only",
    "The API and the CLI never touch a cluster themselves",
    "The simulator runs without a database",
    "The CLI reads no table rows (it calls services or the API client)",
    "No import cycles, at any depth",
}


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_contracts_are_configured() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert config["root_package"] == "gpucenter"
    assert {c["name"] for c in config["contracts"]} >= EXPECTED


@pytest.fixture(scope="module")
def lint_imports() -> Path:
    if not LINT_IMPORTS.exists():
        pytest.fail("lint-imports is missing: pip install -e '.[dev]'")
    return LINT_IMPORTS


def test_the_tree_keeps_every_contract(lint_imports: Path) -> None:
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_page_importing_a_row_breaks_the_check(lint_imports: Path, tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "gpucenter", tmp_path / "gpucenter", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    page = tmp_path / "gpucenter" / "web" / "pages.py"
    page.write_text(
        page.read_text() + "\nfrom gpucenter.persistence.tables import JobRow  # noqa\n"
    )
    done = _lint(tmp_path)
    assert done.returncode != 0
    assert "Routes and pages reach the database through services only BROKEN" in done.stdout
    assert "gpucenter.web.pages -> gpucenter.persistence.tables" in done.stdout
