"""Fixtures of the dashboard's browser tests: a whole stack (tests/ui/stack.py) and Debian's Chromium driven by
Playwright (never a downloaded browser: a missing /usr/bin/chromium fails the tests, naming the fix)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from tests.ui.stack import ADMIN, CHROMIUM_ARGS, Stack, chromium_path, seed_demo, serve_stack

GATES = """\
aliases:
  production:
    - {metric: val_acc, op: ">=", value: 0.5}
  champion:
    - {metric: val_acc, op: ">=", value: 0.99}
"""


# Module scope, not session: Playwright's sync API keeps an event loop running in the main thread while it is
# open, which would break the async tests of the modules that run after these.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright's driver (its Node process; no browser of its own is used)."""
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's headless Chromium."""
    browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The demo stack (two experiments, a live run, a model, queued jobs) with a gates file of its own."""
    tmp = tmp_path_factory.mktemp("ui")
    gates = tmp / "registry.yaml"
    gates.write_text(GATES)
    with serve_stack(tmp, seed_demo, registry_gates=gates) as stack:
        yield stack


def open_page(browser: Browser, stack: Stack, token: str | None = ADMIN) -> Page:
    """A fresh page (its own localStorage) with the token pasted in, as a user would."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(stack.url + "/")
    if token:
        page.fill("#token", token)
        page.click("#token-form button")
    return page


@pytest.fixture
def page(browser: Browser, demo: Stack) -> Iterator[Page]:
    """A page of the demo stack with the admin token; fails the test on an uncaught script error."""
    page = open_page(browser, demo)
    try:
        yield page
        assert page.errors == [], page.errors  # type: ignore[attr-defined]
    finally:
        page.context.close()


def wait_ready(page: Page) -> None:
    """Wait until the view of the current route (location.hash) has rendered: app.js sets body[data-ready] to
    the route it finished, so a view still showing the previous route does not count."""
    page.wait_for_function("() => document.body.dataset.ready === (location.hash || '#/').slice(1)")


def drawn_pixels(page: Page, selector: str) -> int:
    """How many pixels of a canvas are drawn in a series colour (not white, grey grid or black text)."""
    return int(page.eval_on_selector(selector, """canvas => {
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 0; i < data.length; i += 4) {
            const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
            if (a > 0 && Math.max(r, g, b) - Math.min(r, g, b) > 60) n++;  // coloured, not grey
        }
        return n;
    }"""))


ROOT = Path(__file__).resolve().parents[2]
