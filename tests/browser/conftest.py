"""Browser tests: the console in Debian's headless Chromium, driven by Playwright's sync API.

One browser for the whole run (starting Chromium is the slow part), a fresh
context (cookies, viewport) per test, and a live gateway per test on a real
port of 127.0.0.1, sending through the fake Twilio whose status callbacks
mark replies delivered. Without /usr/bin/chromium the tests skip locally and
fail in CI, like the PostgreSQL tests.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import need

CHROMIUM = Path("/usr/bin/chromium")
# The README's screenshots (docs/screenshots) are retaken on request only, with
# GATEWAY_UPDATE_SCREENSHOTS=1: their pixels differ a little from run to run, so a
# plain test run would leave a changed working tree behind. Otherwise they go to /tmp.
SCREENSHOTS = (Path(__file__).resolve().parents[2] / "docs" / "screenshots"
               if os.environ.get("GATEWAY_UPDATE_SCREENSHOTS") == "1"
               else Path(tempfile.gettempdir()) / "gateway-test-screenshots")
# Long enough for a turn and its delivery callback on a busy two-core machine, short enough to fail fast.
EXPECT_TIMEOUT_MS = 10_000
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        need(f"Debian's chromium is not installed at {CHROMIUM} "
             "(scripts/test.sh installs it: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need("the playwright package is not installed (pip install -e '.[test]')")
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    # Chromium's sandbox refuses to start as root (containers, CI): only then is it turned off.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        yield chromium
        chromium.close()


@dataclass
class ConsoleGateway:
    url: str
    key: str
    live: object  # tests.support.live.LiveGateway

    @property
    def runtime(self):
        return self.live.runtime


@pytest.fixture
def console_gateway(live_gateway) -> ConsoleGateway:
    from gateway.services.api_keys import create_key

    live = live_gateway()
    return ConsoleGateway(live.url, create_key(live.runtime, "operator")[1], live)


@pytest.fixture
def open_context(browser):
    """Factory for browser contexts; each page's script errors and CSP violations fail the test."""
    contexts, problems = [], []

    def open_(viewport=DESKTOP, **options):
        context = browser.new_context(viewport=viewport, **options)
        context.set_default_timeout(EXPECT_TIMEOUT_MS)

        def watch(page):
            page.on("pageerror", lambda error: problems.append(f"{page.url}: {error}"))
            page.on("console", lambda message: _unexpected(message) and problems.append(f"{page.url}: {message.text}"))

        context.on("page", watch)
        contexts.append(context)
        return context

    yield open_
    for context in contexts:
        context.close()
    assert not problems, "errors in the browser:\n" + "\n".join(problems)


def _unexpected(message) -> bool:
    # Refused sign-ins (401) and forms sent back with errors (422) are answers the tests ask for.
    expected = "Failed to load resource: the server responded with a status of 4"
    return message.type == "error" and not message.text.startswith(expected)


@pytest.fixture
def page(open_context):
    return open_context().new_page()


def sign_in(page, gateway: ConsoleGateway, key: str | None = None) -> None:
    page.goto(gateway.url + "/console/sessions")
    page.get_by_label("API key").fill(key or gateway.key)
    page.get_by_role("button", name="Sign in").click()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
