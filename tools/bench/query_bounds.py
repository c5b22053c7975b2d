"""Bounds of POST /query against a real API process (uvicorn, its own process, an embedded nats-server).

uv run python tools/bench/query_bounds.py [--concurrent 45] [--timeout-s 3]

1. The review's probes: `select repeat('x', 10000000) from range(20)` (answer bytes, time, API RSS growth) and
   `select count(distinct range) from range(60000000)` (API RSS growth, status).
2. N heavy queries at once (each runs until MLHUB_API_QUERY_TIMEOUT_S) with MLHUB_API_QUERY_MAX_CONCURRENT=N: the
   N+1th gets 429; /healthz latency (p50, p99) while they run; when the last heavy query answered.
3. The same N queries with the default limit (16): how many are taken, how many get 429.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from mlhub.eventlog import EmbeddedNats

TOKEN = "bench-reader-token-01"
ENDLESS = "SELECT count(*) FROM range(1000000000000)"


@contextlib.contextmanager
def api_process(data: Path, nats_url: str, **env: str) -> Iterator[tuple[str, psutil.Process]]:
    """uvicorn serving the API on a free port, until the block ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    environment = {**os.environ, "MLHUB_DATA_DIR": str(data), "MLHUB_NATS_URL": nats_url,
                   "MLHUB_API_TOKENS": f"{TOKEN}:reader", **env}
    child = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "mlhub.api:create_app", "--host",
                              "127.0.0.1", "--port", str(port), "--log-level", "warning"], env=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if child.poll() is not None:
                raise SystemExit("the API did not start")
            time.sleep(0.1)
        yield url, psutil.Process(child.pid)
    finally:
        child.terminate()
        child.wait(timeout=30)


@contextlib.contextmanager
def rss_growth(process: psutil.Process) -> Iterator[dict[str, float]]:
    """Peak RSS growth (MB) of a process over the block, sampled every 5 ms."""
    base = process.memory_info().rss
    found = {"mb": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            found["mb"] = max(found["mb"], (process.memory_info().rss - base) / 1e6)
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        stop.set()
        thread.join()


def probes(url: str, process: psutil.Process) -> None:
    with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        client.post("/api/v1/query", json={"sql": "select 1"})
        for sql in ("select repeat('x', 10000000) from range(20)", "select count(distinct range) from range(60000000)"):
            with rss_growth(process) as growth:
                started = time.perf_counter()
                answer = client.post("/api/v1/query", json={"sql": sql})
                elapsed = time.perf_counter() - started
            body = answer.json()
            what = f"truncated_by {body.get('truncated_by')}" if answer.status_code == 200 else body["error"]["code"]
            print(f"{sql}: status {answer.status_code} ({what}), {len(answer.content):,} bytes in {elapsed:.2f} s, "
                  f"API RSS growth {growth['mb']:.0f} MB")


async def concurrent(url: str, n: int, expect_taken: int) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(base_url=url, timeout=600, headers=headers, limits=limits) as client, \
            httpx.AsyncClient(base_url=url, timeout=30) as probe:
        started = time.perf_counter()
        done_at: list[float] = []

        async def heavy() -> int:
            response = await client.post("/api/v1/query", json={"sql": ENDLESS})
            done_at.append(time.perf_counter() - started)
            return response.status_code

        tasks = [asyncio.create_task(heavy()) for _ in range(n)]
        await asyncio.sleep(1.0)  # all n sent and admitted (or refused)
        extra = await client.post("/api/v1/query", json={"sql": "select 1"})
        latencies: list[float] = []
        while not all(t.done() for t in tasks):
            t0 = time.perf_counter()
            await probe.get("/healthz")
            latencies.append(time.perf_counter() - t0)
            await asyncio.sleep(0.01)
        statuses = [t.result() for t in tasks]
        latencies.sort()
        p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000
        print(f"{n} heavy queries (taken at most {expect_taken}): statuses "
              f"{ {s: statuses.count(s) for s in sorted(set(statuses))} }, the next one {extra.status_code} "
              f"(Retry-After {extra.headers.get('retry-after')}), last answer after {max(done_at):.1f} s; "
              f"/healthz meanwhile: {len(latencies)} requests, p50 {statistics.median(latencies) * 1000:.1f} ms, "
              f"p99 {p99:.1f} ms, max {latencies[-1] * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", type=int, default=45)
    parser.add_argument("--timeout-s", type=float, default=3.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nats = EmbeddedNats(Path(tmp) / "nats", sync="always")
        nats_url = nats.start()
        try:
            with api_process(Path(tmp) / "a", nats_url) as (url, process):
                probes(url, process)
            env = {"MLHUB_API_QUERY_TIMEOUT_S": str(args.timeout_s)}
            with api_process(Path(tmp) / "b", nats_url, MLHUB_API_QUERY_MAX_CONCURRENT=str(args.concurrent),
                             **env) as (url, _):
                asyncio.run(concurrent(url, args.concurrent, args.concurrent))
            with api_process(Path(tmp) / "c", nats_url, **env) as (url, _):
                asyncio.run(concurrent(url, args.concurrent, 16))
        finally:
            nats.stop()


if __name__ == "__main__":
    main()
