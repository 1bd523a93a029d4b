"""Helpers of the dashboard's browser tests: Debian's Chromium, the axe-core check, screenshots.

`chromium_path()` is ``PLAYWRIGHT_CHROMIUM_EXECUTABLE_PATH`` or ``/usr/bin/chromium``; no browser is
ever downloaded. axe-core is vendored next to this file (``axe.min.js``, v4.11.0 from
``npm pack axe-core@4.11.0``) and injected into each page checked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

AXE = Path(__file__).with_name("axe.min.js")
DOCS = Path(__file__).resolve().parents[2] / "docs"  # the README's screenshots


def chromium_path() -> str | None:
    path = os.environ.get("PLAYWRIGHT_CHROMIUM_EXECUTABLE_PATH") or "/usr/bin/chromium"
    return path if os.access(path, os.X_OK) else None


def serious_violations(page: Any) -> list[str]:
    """axe-core's serious and critical violations on the page, one line each (rule, first target).
    axe is loaded through the DevTools protocol, not a <script> tag: the pages' Content-Security-Policy
    refuses inline scripts."""
    page.evaluate(f"() => {{ {AXE.read_text()}\n window.axe = axe; }}")
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {v['nodes'][0]['target'] if v['nodes'] else '?'}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def screenshot(page: Any, name: str) -> None:
    """Save the page as docs/<name>.png (the README shows them)."""
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / f"{name}.png"), full_page=True)
