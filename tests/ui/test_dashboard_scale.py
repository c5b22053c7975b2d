"""The dashboard at scale, in the headless browser: 10,000 runs and a run of 100,000 points per key. The runs page
and the run page must each finish loading in under 2 s (first load of the page, its modules and its data); the
times are printed (pytest -s shows them, and the -ra summary of a failure names them)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect
from tests.ui.conftest import drawn_pixels, open_page, wait_ready
from tests.ui.stack import Stack, seed_scale, serve_stack

BUDGET_S = 2.0


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """10,000 runs, a 2 x 100,000-point run and 9 more 100,000-point runs, appended with append_many and
    projected with run_until."""
    started = time.perf_counter()
    with serve_stack(tmp_path_factory.mktemp("ui-scale"), seed_scale) as stack:
        print(f"\nscale stack: {stack.seeded['runs']} runs + 11 x {stack.seeded['points']} points seeded and "
              f"projected in {time.perf_counter() - started:.1f} s")
        yield stack


def timed_load(page: Page, url: str, ready: str) -> float:
    """Seconds from navigation to the view's data drawn: a fresh page load of the dashboard at url."""
    page.goto("about:blank")
    started = time.perf_counter()
    page.goto(url)
    wait_ready(page)
    page.wait_for_selector(ready, state="attached")
    return time.perf_counter() - started


def test_runs_page_and_run_page_load_in_under_2_s(browser: Browser, scale: Stack) -> None:
    page = open_page(browser, scale)
    try:
        times: dict[str, list[float]] = {"runs page": [], "runs page by val_acc": [], "run page": []}
        long_run = scale.seeded["long_run"]
        for _ in range(3):  # the first load of each also fills the API's caches
            times["runs page"].append(timed_load(page, f"{scale.url}/#/runs?experiment=scale",
                                                 "#runs-table tbody tr:nth-child(50)"))
            times["runs page by val_acc"].append(timed_load(
                page, f"{scale.url}/#/runs?experiment=scale&order=best_metrics.val_acc%20DESC",
                "#runs-table tbody tr:nth-child(50)"))
            times["run page"].append(timed_load(page, f"{scale.url}/#/run/{long_run}",
                                                '#charts canvas[data-key="val_acc"][data-points]'))
        for name, values in times.items():
            print(f"{name}: " + ", ".join(f"{v * 1000:.0f} ms" for v in values))
        expect(page.locator("#page-info")).to_have_count(0)  # on the run page now
        for key in ("loss", "val_acc"):
            selector = f'#charts canvas[data-key="{key}"]'
            points = int(page.get_attribute(selector, "data-points") or 0)
            assert 100 < points <= 1000, (key, points)  # downsampled by the API, not 100,000
            assert drawn_pixels(page, selector) > 300
        expect(page.locator("figure.chart").first).to_contain_text("of 100,000 points")
        # The median of the three loads is held to the budget: a page slow twice fails; one load stalled by the
        # other test worker (pytest-xdist) or by filling the caches does not.
        slow = {name: sorted(values)[1] for name, values in times.items() if sorted(values)[1] >= BUDGET_S}
        assert not slow, f"over {BUDGET_S} s: {slow} (all: {times})"
    finally:
        page.context.close()


def test_a_compare_of_10_runs_of_100000_points_draws_without_freezing(browser: Browser, scale: Stack) -> None:
    page = open_page(browser, scale)
    try:
        runs = ",".join(scale.seeded["long_runs"])
        times = [timed_load(page, f"{scale.url}/#/compare?runs={runs}", '#charts canvas[data-key="loss"][data-points]')
                 for _ in range(3)]
        print("compare page, 10 runs x 100,000 points: " + ", ".join(f"{t * 1000:.0f} ms" for t in times))
        selector = '#charts canvas[data-key="loss"]'
        points = int(page.get_attribute(selector, "data-points") or 0)
        assert 10 * 100 < points <= 10 * 1000, points  # ten downsampled series, not a million points
        assert drawn_pixels(page, selector) > 1000
        expect(page.locator("figure.chart", has=page.locator('canvas[data-key="loss"]'))).to_contain_text(
            "of 1,000,000 points")
        # val_acc: only the first run logged it, so its legend names that run alone
        expect(page.locator("figure.chart", has=page.locator('canvas[data-key="val_acc"]')).locator(
            ".legend span")).to_have_count(2)
        # the page stays responsive: a main-thread round trip right after the charts are drawn is quick
        started = time.perf_counter()
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => r(1)))")
        assert time.perf_counter() - started < 0.5
        assert sorted(times)[1] < BUDGET_S, times  # the median load (as above)
    finally:
        page.context.close()
