"""Nothing from the URL is rendered as markup, flash messages are only the server's own, and
redirects stay on this site."""

from __future__ import annotations

import ast
from pathlib import Path
from urllib.parse import quote

import pytest

from gpucenter.web.flashes import FLASHES
from gpucenter.web.pages import on_site
from tests.web.conftest import Portal

WEB = Path(__file__).resolve().parents[2] / "gpucenter" / "web"
HOSTILE = '<b>x</b><meta http-equiv="refresh" content="0;url=https://example.org/">'


def test_a_flash_from_the_url_is_never_markup_in_a_real_browser(
    portal: Portal, browser_page
) -> None:
    page = browser_page
    page.goto(portal.url("/login?flash=" + quote(HOSTILE)))
    assert page.locator("b", has_text="x").count() == 0
    assert page.locator("meta[http-equiv=refresh]").count() == 0
    assert page.locator("p.flash").count() == 0
    assert page.url.startswith(portal.url("/login"))  # no refresh to another site
    # One of the server's own messages is shown, as text.
    page.goto(portal.url("/login?flash=" + quote("Job submitted.")))
    assert page.locator("p.flash").inner_text() == "Job submitted."
    # A message that is not the server's is not shown, however plain it looks.
    page.goto(portal.url("/login?flash=" + quote("Your session expired: sign in at evil.example")))
    assert page.locator("p.flash").count() == 0


def _flash_arguments() -> list[tuple[str, int, str]]:
    """(file, line, message) of every literal message a redirect passes (done, _to_job),
    following module-level constants such as SUBMITTED = N_("Job submitted.")."""
    found = []
    for path in sorted(WEB.glob("*.py")):
        tree = ast.parse(path.read_text())
        constants = {
            t.id: node.value.args[0].value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", "") == "N_"
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("done", "_to_job")
            ):
                continue
            for arg in ast.walk(node.args[-1]):
                if isinstance(arg, ast.Call) and getattr(arg.func, "id", "") == "N_":
                    found.append((path.name, node.lineno, arg.args[0].value))
                elif isinstance(arg, ast.Name) and arg.id in constants:
                    found.append((path.name, node.lineno, constants[arg.id]))
    return found


def test_every_redirects_message_is_one_the_pages_will_show() -> None:
    found = _flash_arguments()
    assert len(found) >= 12  # the scan sees the redirects
    assert [f for f in found if f[2] not in FLASHES] == []


@pytest.mark.parametrize(
    ("target", "ok"),
    [
        ("/", True),
        ("/jobs?state=RUNNING", True),
        ("//evil.example/", False),
        ("/\\evil.example/", False),
        ("/\t/evil.example/", False),
        ("https://evil.example/", False),
        ("evil.example", False),
        ("", False),
    ],
)
def test_only_paths_on_this_site_are_redirect_targets(target: str, ok: bool) -> None:
    assert on_site(target) is ok
