"""axe-core (vendored from npm in tests/web/vendor/axe-core, see VERSIONS.txt there) run in
the page: WCAG 2.0 and 2.1, levels A and AA. The script is evaluated through the browser's
debugging protocol, so the portal's Content-Security-Policy (which allows no injected
script) stays on while the page is checked."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@cache
def _source() -> str:
    return AXE.read_text(encoding="utf-8")


def violations(page: Any) -> list[dict[str, Any]]:
    """axe's violations of WCAG 2.1 AA on the page as it is now (charts drawn first)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(_source())
    return list(
        page.evaluate(
            """async (tags) => {
                const result = await axe.run(document, {
                    runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]
                });
                return result.violations.map(v => ({
                    id: v.id, impact: v.impact, help: v.help,
                    nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + " :: "
                        + (n.failureSummary || "").replace(/\\s+/g, " ").slice(0, 300))
                }));
            }""",
            WCAG_AA,
        )
    )


def describe(found: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']}\n  " + "\n  ".join(v["nodes"]) for v in found
    )
