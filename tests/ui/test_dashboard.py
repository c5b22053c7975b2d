"""The dashboard in Debian's headless Chromium against a real stack (nats-server, projectors, uvicorn): the runs
table (filter, sort, pages, experiments), a run page (provenance, charts drawn, zoom, live updates, artifact
download, timeline), compare, promotion as admin with the alias history changing, and cancelling a queued job."""

from __future__ import annotations

import hashlib
import re

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from tests.ui.conftest import drawn_pixels, open_page, wait_ready
from tests.ui.stack import ADMIN, READER, WRITER, Stack, seed_demo, serve_stack


def rows(page: Page) -> list[str]:
    """The run ids of the runs table's rows, top to bottom."""
    return [r.get_attribute("data-run") or "" for r in page.query_selector_all("#runs-table tbody tr")]


def test_runs_table_lists_filters_sorts_and_scopes_by_experiment(page: Page, demo: Stack) -> None:
    wait_ready(page)
    expect(page.locator("#runs-table tbody tr")).to_have_count(18)  # 14 runs + the runs of four jobs
    headers = page.locator("#runs-table thead th").all_inner_texts()
    assert {"name", "status", "start", "duration", "lr", "width", "val_acc", "val_loss"} <= {h.strip(" ▲▼")
                                                                                            for h in headers}
    # best metrics: val_acc is declared "max", so its column shows the run's maximum, not its last value
    first = demo.seeded["runs"]["digits"][0]
    detail = httpx.get(f"{demo.url}/api/v1/runs/{first}", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    best = max(m["max_value"] for m in detail["metrics"] if m["key"] == "val_acc")
    column = [h.strip(" ▲▼") for h in headers].index("val_acc")
    cell = page.locator(f'#runs-table tr[data-run="{first}"] td').nth(column).inner_text()
    assert abs(float(cell) - best) < 1e-3, (cell, best)

    page.fill("#filter", "params.lr = '0.1' and status = 'finished'")
    page.click(".filter button")
    expect(page.locator("#page-info")).to_contain_text("5 runs")  # digits 0, 3, 6, wine 0, 3 (digits 9 trains)
    assert sorted(r[:-10] for r in rows(page)) == ["digits00", "digits03", "digits06", "wine00", "wine03"]

    page.fill("#filter", "metrics.val_acc > 0.5 and colour = 'red'")
    page.click(".filter button")
    expect(page.locator(".error")).to_contain_text("INVALID_FILTER")
    expect(page.locator(".error")).to_contain_text("colour")

    page.click('[data-experiment="wine"]')
    expect(page.locator("#page-info")).to_contain_text("4 runs")
    page.click('th[data-sort="name"]')  # server-side sort: name DESC, then ASC
    expect(page.locator("th.sorted-desc")).to_have_text(re.compile("name"))
    assert [r[:6] for r in rows(page)] == ["wine03", "wine02", "wine01", "wine00"]
    page.click('th[data-sort="name"]')
    expect(page.locator("th.sorted-asc")).to_have_text(re.compile("name"))
    assert [r[:6] for r in rows(page)] == ["wine00", "wine01", "wine02", "wine03"]


def test_runs_are_paged_on_the_server(browser: Browser, demo: Stack) -> None:
    page = open_page(browser, demo)
    try:
        page.evaluate("() => { localStorage.setItem('mlhub.columns', JSON.stringify({params: ['lr'], metrics: []})) }")
        page.goto(demo.url + "/#/runs?experiment=digits&order=name%20ASC&size=4")
        wait_ready(page)
        expect(page.locator("#runs-table thead th")).to_have_count(6)  # select, name, status, start, duration, lr
        seen = []
        for expected in (4, 4, 2):
            expect(page.locator("#runs-table tbody tr")).to_have_count(expected)
            seen += rows(page)
            if expected == 2:
                assert page.locator("#next").is_disabled()
            else:
                page.click("#next")
                wait_ready(page)
        assert [r[:8] for r in seen] == [f"digits{i:02d}" for i in range(10)]
        expect(page.locator("#page-info")).to_contain_text("page 3")
        page.click("#prev")
        expect(page.locator("#page-info")).to_contain_text("page 2")
        assert [r[:8] for r in rows(page)] == [f"digits{i:02d}" for i in range(4, 8)]

        # a metric column sorts on the server too, across pages: val_acc's best rises with the run number
        page.evaluate("() => localStorage.setItem('mlhub.columns', '{\"params\": [], \"metrics\": [\"val_acc\"]}')")
        page.reload()
        wait_ready(page)
        page.click('th[data-sort="best_metrics.val_acc"]')
        expect(page.locator("th.sorted-desc")).to_have_text(re.compile("val_acc"))
        seen = []
        for expected in (4, 4, 2):
            expect(page.locator("#runs-table tbody tr")).to_have_count(expected)
            seen += rows(page)
            if expected != 2:
                page.click("#next")
                wait_ready(page)
        assert [r[:8] for r in seen] == [f"digits{i:02d}" for i in range(9, -1, -1)]
    finally:
        page.context.close()


def test_run_page_shows_provenance_charts_artifacts_and_timeline(page: Page, demo: Stack) -> None:
    run_id = demo.seeded["runs"]["digits"][1]  # an odd run: its code version is dirty
    page.goto(f"{demo.url}/#/run/{run_id}")
    wait_ready(page)
    expect(page.locator("#run-status")).to_contain_text("finished")
    expect(page.locator("#code-version")).to_contain_text("dirty")
    expect(page.locator("#code-version")).to_contain_text("0123456789abcdef")
    expect(page.locator("#dataset-fingerprint")).to_contain_text("01abab")
    expect(page.locator("#config-snapshot")).to_contain_text('"lr": 0.01')
    expect(page.locator("#environment")).to_contain_text("torch 2.5.1")
    expect(page.locator(".provenance")).to_contain_text("1001")  # the seed
    expect(page.locator("#params")).to_contain_text("width")
    charts = page.locator("#charts canvas")
    expect(charts).to_have_count(3)
    for key in ("train_loss", "val_acc", "val_loss"):
        selector = f'#charts canvas[data-key="{key}"]'
        assert page.get_attribute(selector, "data-points") == "50"
        assert drawn_pixels(page, selector) > 200, key
    expect(page.locator("#timeline tbody tr")).to_have_count(11)  # created .. finished
    expect(page.locator("#timeline")).to_contain_text("run.code_version_recorded")
    expect(page.locator("#timeline")).to_contain_text("val_loss: 50 points")

    # x axis by epoch, then a zoom by dragging across the plot refetches that step range
    page.select_option("#x-unit", "epoch")
    page.select_option("#x-unit", "step")
    page.locator('#charts canvas[data-key="val_loss"]').scroll_into_view_if_needed()
    box = page.locator('#charts canvas[data-key="val_loss"]').bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 80, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 200, box["y"] + 100, steps=5)
    page.mouse.up()
    figure = page.locator("figure.chart", has=page.locator('canvas[data-key="val_loss"]'))
    expect(figure).to_have_attribute("data-zoomed", "true")
    zoomed = int(page.get_attribute('#charts canvas[data-key="val_loss"]', "data-points") or 0)
    assert 0 < zoomed < 50
    page.dblclick('#charts canvas[data-key="val_loss"]')
    expect(figure).to_have_attribute("data-zoomed", "false")


def test_an_artifact_downloads_with_the_token(page: Page, demo: Stack) -> None:
    page.goto(f"{demo.url}/#/run/{demo.seeded['provenance_run']}")
    wait_ready(page)
    expect(page.locator("#code-version")).to_contain_text("clean")
    with page.expect_download() as info:
        page.click('button.download[data-path="model/model.onnx"]')
    path = info.value.path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(b"onnx model bytes " * 1000).hexdigest()


def test_a_training_run_updates_live(page: Page, demo: Stack) -> None:
    run_id = demo.seeded["live_run"]
    page.goto(f"{demo.url}/#/run/{run_id}")
    wait_ready(page)
    selector = '#charts canvas[data-key="val_loss"]'
    assert page.get_attribute(selector, "data-points") == "50"
    response = httpx.post(f"{demo.url}/api/v1/runs/{run_id}/log-batch", headers={"Authorization": f"Bearer {WRITER}"},
                          json={"metrics": [{"key": "val_loss", "values": [0.5] * 30, "steps": list(range(50, 80))},
                                            {"key": "lr_now", "values": [0.1, 0.05], "steps": [0, 1]}]})
    assert response.status_code == 200, response.text
    expect(page.locator(selector)).to_have_attribute("data-points", "80", timeout=15_000)
    expect(page.locator('#charts canvas[data-key="lr_now"]')).to_have_attribute("data-points", "2")
    finished = httpx.post(f"{demo.url}/api/v1/runs/{run_id}/finish", headers={"Authorization": f"Bearer {WRITER}"},
                          json={"status": "finished"})
    assert finished.status_code == 200, finished.text
    expect(page.locator("#run-status")).to_contain_text("finished", timeout=15_000)


def test_compare_two_runs(page: Page, demo: Stack) -> None:
    a, b = demo.seeded["runs"]["wine"][0], demo.seeded["runs"]["wine"][1]
    page.click('[data-experiment="wine"]')
    expect(page.locator("#page-info")).to_contain_text("4 runs")
    page.check(f'#runs-table tr[data-run="{a}"] input[type=checkbox]')
    assert page.locator("#compare").is_disabled()
    page.check(f'#runs-table tr[data-run="{b}"] input[type=checkbox]')
    page.click("#compare")
    wait_ready(page)
    assert f"runs={a}%2C{b}" in page.url or f"runs={a},{b}" in page.url
    expect(page.locator("#charts canvas")).to_have_count(3)
    for canvas in page.query_selector_all("#charts canvas"):
        assert canvas.get_attribute("data-points") == "100"  # two runs x 50 points, overlaid
    assert drawn_pixels(page, '#charts canvas[data-key="val_acc"]') > 300
    expect(page.locator("figure.chart").first.locator(".legend span")).to_have_count(3)  # 2 runs + the note
    diff = page.locator("#param-diff tbody tr")
    expect(diff).to_have_count(2)  # lr and width differ; optimizer does not
    expect(page.locator("#param-diff")).not_to_contain_text("optimizer")


def test_promote_a_version_as_admin_and_see_the_alias_history(browser: Browser, demo: Stack) -> None:
    writer = open_page(browser, demo, token=WRITER)
    try:  # production is protected: a writer's promotion is refused, naming the role needed
        writer.goto(f"{demo.url}/#/model/digits-mlp")
        wait_ready(writer)
        writer.select_option("#promote-version", "2")
        writer.fill("#promote-alias", "production")
        writer.click(".promote button")
        expect(writer.locator("#promote-message .error")).to_contain_text("PERMISSION_DENIED")
    finally:
        writer.context.close()

    page = open_page(browser, demo, token=ADMIN)
    try:
        page.goto(f"{demo.url}/#/model/digits-mlp")
        wait_ready(page)
        history = page.locator('table.history[data-alias="production"] tbody tr')
        expect(history).to_have_count(1)
        page.select_option("#promote-version", "2")
        page.fill("#promote-alias", "production")
        page.fill("#promote-reason", "better val_loss")
        page.click(".promote button")
        expect(page.locator("#promote-message")).to_contain_text("production now points to v2")
        expect(history).to_have_count(2)
        expect(history.nth(1)).to_contain_text("v1 → v2")
        expect(history.nth(1)).to_contain_text("better val_loss")
        expect(page.locator('#aliases tr[data-alias="production"]')).to_contain_text("v2")
        # a gate the version does not meet is refused with the condition named, and nothing changes
        page.select_option("#promote-version", "3")
        page.fill("#promote-alias", "champion")
        page.click(".promote button")
        expect(page.locator("#promote-message .error")).to_contain_text("PROMOTION_GATE_FAILED")
        expect(page.locator("#promote-message .error")).to_contain_text("val_acc >= 0.99 failed")
    finally:
        page.context.close()


def test_jobs_show_their_worker_and_attempts(page: Page, demo: Stack) -> None:
    page.goto(f"{demo.url}/#/jobs")
    wait_ready(page)
    retried = page.locator(f'#jobs tr[data-job="{demo.seeded["retried_job"]}"]')
    expect(retried).to_contain_text("running")
    expect(retried).to_contain_text("gpu-node-2/worker-1")
    expect(retried).to_contain_text("2/")  # the second attempt
    page.click('[data-status="succeeded"]')
    wait_ready(page)
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    expect(page.locator(f'#jobs tr[data-job="{demo.seeded["done_job"]}"]')).to_contain_text("cpu-node-1/worker-0")
    expect(page.locator("#jobs button.cancel")).to_have_count(0)


def test_cancel_a_queued_job(page: Page, demo: Stack) -> None:
    page.goto(f"{demo.url}/#/jobs?status=queued")
    wait_ready(page)
    job = demo.seeded["jobs"][0]
    row = page.locator(f'#jobs tr[data-job="{job}"]')
    expect(row).to_contain_text("queued")
    expect(row).to_contain_text("digits-mlp")
    row.locator("button.cancel").click()
    expect(page.locator("#jobs-message")).to_contain_text("cancelled")
    expect(page.locator(f'#jobs tr[data-job="{job}"]')).to_have_count(0)  # no longer queued
    page.click('[data-status="cancelled"]')
    expect(page.locator(f'#jobs tr[data-job="{job}"]')).to_contain_text("cancelled")
    expect(page.locator(f'#jobs tr[data-job="{job}"] button.cancel')).to_have_count(0)


def test_reads_need_a_token_unless_open(browser: Browser, demo: Stack) -> None:
    page = open_page(browser, demo, token=None)
    try:
        wait_ready(page)
        expect(page.locator(".error")).to_contain_text("UNAUTHENTICATED")
        page.fill("#token", READER)
        page.click("#token-form button")
        wait_ready(page)
        expect(page.locator("#runs-table tbody tr").first).to_be_visible()
        page.reload()  # the token is kept in localStorage
        wait_ready(page)
        expect(page.locator("#runs-table tbody tr").first).to_be_visible()
    finally:
        page.context.close()


def test_a_reader_token_sees_no_write_actions(browser: Browser, demo: Stack) -> None:
    page = open_page(browser, demo, token=READER)
    try:
        wait_ready(page)
        expect(page.locator("#token-state")).to_have_text("reader token")
        page.goto(f"{demo.url}/#/jobs?status=queued")
        wait_ready(page)
        expect(page.locator("#jobs tbody tr").first).to_contain_text("queued")
        expect(page.locator("#jobs button.cancel")).to_have_count(0)
        page.goto(f"{demo.url}/#/model/digits-mlp")
        wait_ready(page)
        expect(page.locator(".promote button")).to_be_disabled()
        expect(page.locator("#promote-rights")).to_contain_text("may only read")
        page.fill("#token", ADMIN)
        page.click("#token-form button")
        expect(page.locator("#token-state")).to_have_text("admin token")
        expect(page.locator(".promote button")).to_be_enabled()
        page.fill("#token", "not-a-configured-token")
        page.click("#token-form button")
        expect(page.locator("#token-state")).to_have_text("token refused")
        expect(page.locator(".error")).to_contain_text("UNAUTHENTICATED")
    finally:
        page.context.close()


def test_with_open_reads_no_token_is_needed_to_look(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> None:
    with serve_stack(tmp_path_factory.mktemp("ui-open"), seed_demo, api_open_reads=True) as stack:
        page = open_page(browser, stack, token=None)
        try:
            wait_ready(page)
            expect(page.locator("#runs-table tbody tr")).to_have_count(18)
            expect(page.locator("#token-state")).to_have_text("no token (open reads?)")
            page.goto(f"{stack.url}/#/run/{stack.seeded['provenance_run']}")
            wait_ready(page)
            expect(page.locator("#charts canvas[data-points]")).to_have_count(3)
            page.goto(f"{stack.url}/#/model/digits-mlp")
            wait_ready(page)
            expect(page.locator(".promote button")).to_be_disabled()  # writes still need a token
            page.goto(f"{stack.url}/#/jobs")
            wait_ready(page)
            expect(page.locator("#jobs button.cancel")).to_have_count(0)
        finally:
            page.context.close()


def test_end_a_stuck_script_run_by_hand(browser: Browser, demo: Stack) -> None:
    with httpx.Client(base_url=f"{demo.url}/api/v1", headers={"Authorization": f"Bearer {WRITER}"}) as api:
        run_id = api.post("/runs", json={"experiment": "scripts", "name": "stuck"}).json()["run_id"]
    reader = open_page(browser, demo, token=READER)
    try:
        reader.goto(f"{demo.url}/#/run/{run_id}")
        wait_ready(reader)
        expect(reader.locator("#run-status")).to_contain_text("running")
        expect(reader.locator("#end-run")).to_have_count(0)  # a reader may not end runs
    finally:
        reader.context.close()
    page = open_page(browser, demo, token=WRITER)
    try:
        page.goto(f"{demo.url}/#/run/{run_id}")
        wait_ready(page)
        page.select_option("#end-status", "failed")
        page.click("#end-run")
        expect(page.locator("#run-status")).to_contain_text("failed")
        expect(page.locator("#end-run")).to_have_count(0)  # ended: nothing more to end
        assert page.errors == [], page.errors  # type: ignore[attr-defined]
    finally:
        page.context.close()
    detail = httpx.get(f"{demo.url}/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {READER}"}).json()
    assert detail["run"]["status"] == "failed" and detail["run"]["error_type"] == "EndedByHand"
