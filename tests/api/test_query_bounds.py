"""POST /query is bounded (issue 12, item 3): answers in bytes as well as rows, DuckDB's memory and threads,
how many queries one API process takes at once (429 past it) while other endpoints stay responsive; the system
catalogue is refused; MLHUB_API_OPEN_READS does not open /query.

The memory probes run against the API served by uvicorn in a process of its own (the test's nats-server), whose
RSS a thread samples every 5 ms while the query runs; the others use the in-process API fixtures (real NATS,
real read model, the app's lifespan)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from tests.api.conftest import READER, TOKENS, Api, api_settings, auth, create_run, database_url, running_api

from mlhub.eventlog import EventLog

pytestmark = pytest.mark.timeout(180)

MiB = 1024 * 1024
#: Runs until interrupted (a count over a trillion rows).
ENDLESS = "SELECT count(*) FROM range(1000000000000)"


@contextlib.asynccontextmanager
async def api_with(tmp_path: Path, nats_url: str, event_log: EventLog, **extra: Any) -> AsyncIterator[Api]:
    with database_url("sqlite", tmp_path) as url:
        async with running_api(api_settings(tmp_path, nats_url, url, **extra), event_log) as running:
            yield running


@contextlib.contextmanager
def api_process(tmp_path: Path, nats_url: str, **env: str) -> Iterator[tuple[str, psutil.Process]]:
    """The API served by uvicorn in a process of its own (over the test's nats-server, a fresh SQLite read
    model): its URL and its process, whose RSS is what the heavy queries must not grow by 300 MB."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    environment = {**os.environ, "MLHUB_DATA_DIR": str(tmp_path / "data"), "MLHUB_NATS_URL": nats_url,
                   "MLHUB_API_TOKENS": TOKENS, **env}
    child = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "mlhub.api:create_app", "--host",
                              "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            assert child.poll() is None and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.1)
        yield url, psutil.Process(child.pid)
    finally:
        child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@contextlib.contextmanager
def rss_growth(process: psutil.Process) -> Iterator[dict[str, float]]:
    """The peak growth (MB) of a process's RSS over the block, sampled every 5 ms."""
    base = process.memory_info().rss
    found = {"mb": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            found["mb"] = max(found["mb"], (process.memory_info().rss - base) / 1e6)
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield found
    finally:
        stop.set()
        sampler.join()


def test_heavy_queries_are_bounded_in_bytes_and_memory(tmp_path: Path, nats_url: str) -> None:
    """The two probes of the review against an API process: 200 MB of answer and a 60M-row distinct count."""
    with api_process(tmp_path, nats_url) as (url, process), httpx.Client(base_url=url, timeout=60,
                                                                           headers=auth(READER)) as client:
        assert client.post("/api/v1/query", json={"sql": "select 1"}).status_code == 200  # the engine is open
        with rss_growth(process) as growth:
            started = time.perf_counter()
            big = client.post("/api/v1/query", json={"sql": "select repeat('x', 10000000) AS s from range(20)"})
            elapsed = time.perf_counter() - started
        assert big.status_code == 200, big.text[:300]
        assert len(big.content) <= 16 * MiB
        answer = big.json()
        assert answer["truncated"] and answer["truncated_by"] == "bytes"
        assert answer["limit"] == {"name": "MLHUB_API_QUERY_MAX_BYTES", "value": 16 * MiB}
        assert answer["row_count"] == 1 == len(answer["rows"])
        print(f"byte cap: {len(big.content)} bytes in {elapsed:.2f}s, API RSS growth {growth['mb']:.0f} MB")
        assert growth["mb"] < 300, growth

        with rss_growth(process) as growth:
            response = client.post("/api/v1/query", json={"sql": "select count(distinct range) from range(60000000)"})
        assert response.status_code == 422, response.text[:300]
        error = response.json()["error"]
        assert error["code"] == "QUERY_OUT_OF_MEMORY" and "MLHUB_API_QUERY_MEMORY_MB" in error["message"]
        print(f"memory limit: API RSS growth {growth['mb']:.0f} MB")
        assert growth["mb"] < 300, growth
        assert client.post("/api/v1/query", json={"sql": "select 1"}).status_code == 200  # it still answers


async def test_answers_say_which_limit_cut_them(api: Api) -> None:
    one_cell_too_big = await api.post("/query", {"sql": "select repeat('x', 20000000)"}, token=READER)
    assert one_cell_too_big.json()["row_count"] == 0 and one_cell_too_big.json()["truncated_by"] == "bytes"
    rows = await api.post("/query", {"sql": "select range AS i from range(100)", "max_rows": 10}, token=READER)
    assert rows.json()["truncated_by"] == "rows" and rows.json()["limit"] == {"name": "max_rows", "value": 10}
    whole = await api.post("/query", {"sql": "select range AS i from range(10)"}, token=READER)
    assert whole.json()["truncated"] is False and whole.json()["truncated_by"] is None
    assert whole.json()["rows"] == [[i] for i in range(10)]


async def test_many_rows_stop_at_the_byte_limit(tmp_path: Path, nats_url: str, event_log: EventLog) -> None:
    async with api_with(tmp_path, nats_url, event_log, api_query_max_bytes=MiB) as api:
        response = await api.post("/query", {"sql": "select range, repeat('y', 100) from range(100000)"},
                                  token=READER)
        assert response.status_code == 200
        assert MiB - 4096 < len(response.content) <= MiB
        answer = response.json()
        assert answer["truncated_by"] == "bytes" and 5000 < answer["row_count"] < 10000
        assert answer["rows"][-1][0] == answer["row_count"] - 1


async def test_the_system_catalogue_is_refused(api: Api) -> None:
    for sql in ("select sql from duckdb_views", "select * from duckdb_views()", "select * from duckdb_tables()",
                "select * from duckdb_settings()", "select * from duckdb_tables", "select * from duckdb_settings",
                "select * from information_schema.tables", "select view_definition from information_schema.views",
                "select * from pg_catalog.pg_views", "select * from pg_views", "select * from pg_class",
                "select * from pragma_database_list", "select * from pragma_database_list()",
                "select * from system.main.duckdb_views", "select * from sqlite_master",
                "select pg_get_viewdef(1)", "select current_setting('memory_limit')", "select current_schemas(true)",
                "describe select * from duckdb_views", "select * from (select * from duckdb_columns) c",
                "with v as (select * from duckdb_views) select * from v", "select * from nosuchview",
                "select * from memory.main.duckdb_views", "select * from temp.main.x"):
        response = await api.post("/query", {"sql": sql}, token=READER)
        assert response.status_code == 400, (sql, response.text[:300])
        assert response.json()["error"]["code"] == "QUERY_REFUSED", (sql, response.text[:300])
        assert "/" not in response.json()["error"]["message"].replace("n/a", ""), response.text[:300]
    run = await create_run(api, "bounds")
    for sql in ("with duckdb_views as (select 1 as x) select x from duckdb_views",
                "select count(*) from runs", "select * from readmodel.runs", "select * from mlhub.points",
                f"select * from run_metrics('{run['run_id']}', 'loss')",
                "select * from metrics m join runs r using (run_id)", "select * from generate_series(1, 3)",
                "with a as (select 1 as x), b as (select x from a) select * from b"):
        response = await api.post("/query", {"sql": sql}, token=READER, params={"min_seq": run["seq"]})
        assert response.status_code == 200, (sql, response.text[:300])


async def test_open_reads_do_not_open_query(tmp_path: Path, nats_url: str, event_log: EventLog) -> None:
    async with api_with(tmp_path / "reads", nats_url, event_log, api_open_reads=True) as api:
        assert (await api.get("/runs", token=None)).status_code == 200
        refused = await api.post("/query", {"sql": "select 1"}, token=None)
        assert refused.status_code == 401, refused.text
        assert (await api.post("/query", {"sql": "select 1"}, token=READER)).status_code == 200
    async with api_with(tmp_path / "query", nats_url, event_log, api_open_query=True) as api:
        assert (await api.post("/query", {"sql": "select 1"}, token=None)).status_code == 200
        assert (await api.get("/runs", token=None)).status_code == 401


async def test_past_the_concurrency_limit_a_query_gets_429_and_healthz_stays_fast(
        tmp_path: Path, nats_url: str, event_log: EventLog) -> None:
    """The 45/46 case with small numbers (2 cores): 6 heavy queries taken (2 running at once), the 7th gets 429;
    /healthz answers meanwhile with p99 under 100 ms. tools/bench/query_bounds.py measures 45/46 at full size."""
    async with api_with(tmp_path, nats_url, event_log, api_query_max_concurrent=6, api_query_workers=2,
                        api_query_timeout_s=2.0) as api:
        heavy = [asyncio.create_task(api.post("/query", {"sql": ENDLESS}, token=READER)) for _ in range(6)]
        while api.client._transport.app.state.mlhub.query_gate.active < 6:  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
        extra = await api.post("/query", {"sql": "select 1"}, token=READER)
        assert extra.status_code == 429, extra.text
        assert extra.headers["retry-after"] == "1"
        assert extra.json()["error"]["code"] == "TOO_MANY_QUERIES"
        assert "MLHUB_API_QUERY_MAX_CONCURRENT" in extra.json()["error"]["message"]
        latencies = []
        while not all(task.done() for task in heavy):
            started = time.perf_counter()
            assert (await api.client.get("/healthz")).status_code == 200
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
        answers = [await task for task in heavy]
        assert [a.status_code for a in answers] == [422] * 6
        assert {a.json()["error"]["code"] for a in answers} == {"QUERY_TIMEOUT"}
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(f"healthz under 6 heavy queries: {len(latencies)} requests, p99 {p99 * 1000:.1f} ms")
        assert len(latencies) > 50 and p99 < 0.1
        assert (await api.post("/query", {"sql": "select 1"}, token=READER)).status_code == 200  # slots freed
