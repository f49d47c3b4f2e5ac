"""Driving the web page in a real browser: headless Chromium through Playwright (sync API).

Playwright's own browser download is not needed: the tests use the system's
Chromium (Debian's ``chromium`` package, which ``.ci/run`` installs when it is
missing), launched through ``executable_path``, headless, with
``--no-sandbox`` (CI runs as root). Where no Chromium is found, or Playwright is
not installed, the browser tests skip and say why.

* ``browser_fixture`` (a pytest fixture named ``browser``): one browser per test;
  import it into a test module (``from tests.browserutil import browser_fixture  # noqa: F401``).
* :func:`new_page`: a page in a context of its own (its own cookies), with bounded timeouts.
* :func:`login`: ``meshnode web --no-open --json`` on a real daemon, then the link opened.
* :func:`axe_check`: axe-core (the copy axe-playwright-python bundles) on the page;
  fails on any violation of impact "serious" or "critical".
* :func:`shot`: a full-page PNG under ``test-artifacts/screenshots/`` at the repo root.

Plain ``def`` tests: pytest-trio's trio_mode only runs ``async def`` tests in trio,
and Playwright's sync API runs its own loop.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

    from tests.daemonutil import Daemon

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
AXE_RESULTS = ARTIFACTS / "axe"
#: How long one Playwright action or expectation may take (ms).
ACTION_TIMEOUT_MS = 15_000
#: How long a navigation may take (ms).
NAVIGATION_TIMEOUT_MS = 20_000
#: The axe-core impacts that fail a page.
FAILING_IMPACTS = ("serious", "critical")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 360, "height": 740}


def find_chromium() -> str | None:
    """The system's Chromium: ``$MESHNODE_CHROMIUM``, ``chromium`` on the PATH, or Debian's binary."""
    for candidate in (
        os.environ.get("MESHNODE_CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        "/usr/lib/chromium/chromium",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(name="browser")
def browser_fixture() -> Iterator[Browser]:
    """A headless Chromium for one test (skips, saying why, where there is none)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed: pip install -e '.[test]'")
    executable = find_chromium()
    if executable is None:
        pytest.skip(
            "no Chromium found (looked for chromium on the PATH and /usr/lib/chromium/chromium):"
            " apt-get install --no-install-recommends chromium (.ci/run does this as root)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
            timeout=60_000,
        )
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Browser, *, phone: bool = False) -> Page:
    """A page in a fresh context (its own cookies): a desktop window, or a 360 px wide phone."""
    context = browser.new_context(
        viewport=PHONE if phone else DESKTOP,
        is_mobile=phone,
        has_touch=phone,
        device_scale_factor=2 if phone else 1,
        locale="en-GB",
    )
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    return context.new_page()


def login(page: Page, daemon: Daemon) -> str:
    """Log ``page`` in to ``daemon``'s web page with a fresh one-time link; the page's base URL."""
    assert daemon.web_url, f"the daemon serves no web page: {''.join(daemon.output)}"
    data = daemon.json("web", "--no-open")
    assert isinstance(data, dict), data
    url = data["url"]
    assert url.startswith(daemon.web_url + "/login?token="), url
    page.goto(url)
    assert re.search(r"/offers$", page.url), f"the login link led to {page.url}, not /offers"
    return daemon.web_url


def _axe_script() -> str:
    import axe_playwright_python

    return (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8")


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's violations on ``page`` as it is now (all impacts).

    The script goes in through ``page.evaluate`` (the DevTools protocol), not a
    ``<script>`` tag: the page's Content-Security-Policy allows only its own scripts.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(_axe_script())
    results = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    violations: list[dict[str, Any]] = results["violations"]
    return violations


def axe_check(page: Page, name: str | None = None) -> list[dict[str, Any]]:
    """Fail on axe-core violations of impact serious or critical; the minor/moderate ones are returned.

    Every violation found is saved to ``test-artifacts/axe/NAME.json`` when ``name`` is given.
    """
    violations = axe_violations(page)
    if name is not None:
        AXE_RESULTS.mkdir(parents=True, exist_ok=True)
        (AXE_RESULTS / f"{name}.json").write_text(json.dumps(violations, indent=1), encoding="utf-8")
    failing = [v for v in violations if v.get("impact") in FAILING_IMPACTS]
    assert not failing, f"axe-core on {page.url}:\n" + describe(failing)
    return violations


def describe(violations: list[dict[str, Any]]) -> str:
    """axe-core violations in a few lines each: rule, impact, help, the first elements."""
    out = []
    for v in violations:
        out.append(f"- {v['id']} ({v.get('impact')}): {v['help']} [{v.get('helpUrl', '')}]")
        for node in v.get("nodes", [])[:3]:
            out.append(f"    {node.get('target')}: {node.get('html', '')[:160]}")
            summary = node.get("failureSummary")
            if summary:
                out.append("      " + " ".join(summary.split())[:240])
    return "\n".join(out)


def shot(page: Page, name: str) -> Path:
    """A full-page screenshot of ``page`` as ``test-artifacts/screenshots/NAME.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
