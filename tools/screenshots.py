"""Regenerate the dashboard screenshots linked from the README: docs/screenshots/{runs,run,compare,models,jobs}.png.

Starts the demo stack of the browser tests (tests/ui/stack.py: a real nats-server, projectors and uvicorn with
two experiments of seeded runs, a model and queued jobs) and photographs the dashboard in Debian's headless
Chromium through Playwright (never a downloaded browser).

    uv run python tools/screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the stack lives with the browser tests

from playwright.sync_api import Page, sync_playwright  # noqa: E402
from tests.ui.stack import ADMIN, CHROMIUM_ARGS, chromium_path, seed_demo, serve_stack  # noqa: E402


def shoot(page: Page, url: str, ready: str, path: Path) -> None:
    """Open url, wait for the view and the selector, and save a full-page PNG."""
    page.goto(url)
    page.wait_for_function("() => document.body.dataset.ready === (location.hash || '#/').slice(1)")
    page.wait_for_selector(ready, state="attached")
    page.wait_for_timeout(300)  # let the last chart paint
    page.screenshot(path=str(path), full_page=True)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="mlhub-shots-") as tmp:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        with serve_stack(Path(tmp), seed_demo) as stack:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(stack.url + "/")
            page.fill("#token", ADMIN)  # pasted as a user would; kept in localStorage
            page.click("#token-form button")
            runs = stack.seeded["runs"]
            shoot(page, f"{stack.url}/#/runs?experiment=digits", "#runs-table tbody tr", out / "runs.png")
            shoot(page, f"{stack.url}/#/run/{runs['digits'][1]}", "#timeline", out / "run.png")
            shoot(page, f"{stack.url}/#/compare?runs={runs['digits'][0]},{runs['digits'][4]},{runs['digits'][7]}",
                  "#charts canvas[data-points]", out / "compare.png")
            shoot(page, f"{stack.url}/#/model/{stack.seeded['model']}", "#alias-histories table", out / "models.png")
            shoot(page, f"{stack.url}/#/jobs", "#jobs", out / "jobs.png")
        browser.close()


if __name__ == "__main__":
    main()
