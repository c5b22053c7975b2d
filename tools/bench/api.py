"""REST API benchmark: latency and throughput of the hot reads under concurrent clients, and tracking ingest.

Sets up a fresh embedded nats-server and data dir, appends 1,000 runs (params, tags, a few metrics each) and one
run of 100,000 points, then starts `mlhub projector` and the API (uvicorn) as subprocesses, as a deployment
runs them. Measured with `clients` concurrent keep-alive connections for `seconds` seconds each:

- GET /api/v1/runs (a page of 100 of the 1,000 runs, with params, tags and last metric values);
- GET /api/v1/runs/{id}/metrics/loss?max_points=1000 (a 1,000-point series of the 100,000-point run);
- tracking ingest: points/s through POST /runs/{id}/log-batch, end to end until the points are queryable
  (the series endpoint with min_seq answers every point).

Baselines from the same invocation: the same SQL search and the same DuckDB downsampling query called
in-process (no HTTP), so the ratio shows what the HTTP layer costs.

    uv run python tools/bench/api.py [--clients 32] [--seconds 5] [--workers 1] [--sync always]
                                     [--only ingest --ingest-rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from mlhub.eventlog import EmbeddedNats, EventLog
from mlhub.events import (
    Envelope,
    ExperimentCreated,
    MetricSeries,
    MetricsLogged,
    ParamsLogged,
    RunCreated,
    RunStarted,
    TagsSet,
)

TARGETS = {"runs_p50_ms": 10.0, "runs_rps": 1000.0, "series_p50_ms": 20.0, "ingest_points_s": 500_000.0}
TOKEN = "bench-admin-token"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def seed(log: EventLog, runs: int, long_points: int) -> str:
    """`runs` small runs and one run with `long_points` points of key "loss"; returns the long run's id."""
    envs: list[Envelope] = [Envelope(event=ExperimentCreated(experiment_id="bench", name="bench"), producer="bench")]
    for i in range(runs):
        run_id = f"r{i:05d}{uuid.uuid4().hex[:8]}"
        envs += [Envelope(event=e, producer="bench") for e in (
            RunCreated(run_id=run_id, experiment_id="bench", name=f"run-{i}", source="sdk"),
            ParamsLogged(run_id=run_id, params={"lr": str(10 ** -(i % 4)), "width": str(32 * (1 + i % 8))}),
            TagsSet(run_id=run_id, tags={"team": ("vision", "nlp")[i % 2]}),
            RunStarted(run_id=run_id),
            MetricsLogged.from_points(run_id, [("val_acc", (i % 100) / 100, s, 0, 1_760_000_000_000 + s)
                                               for s in range(10)]),
        )]
    long_id = f"long{uuid.uuid4().hex[:12]}"
    envs += [Envelope(event=RunCreated(run_id=long_id, experiment_id="bench", name="long", source="sdk"),
                      producer="bench")]
    per_event = 1000
    for start in range(0, long_points, per_event):
        steps = range(start, min(start + per_event, long_points))
        envs.append(Envelope(event=MetricsLogged(run_id=long_id, series=(MetricSeries(
            key="loss", values=tuple(math.exp(-s / 20_000) + 0.01 * math.sin(s) for s in steps),
            steps=tuple(steps), epochs=tuple(s // 1000 for s in steps),
            timestamps=tuple(1_760_000_000_000 + s for s in steps)),)), producer="bench"))
    await log.append_many(envs, max_in_flight=256)
    return long_id


def load(url: str, clients: int, seconds: float, params: dict[str, Any] | None = None) -> dict[str, float]:
    """`clients` concurrent keep-alive connections GETting url for `seconds`: p50/p99 latency (ms), requests/s.

    The load generator is a minimal HTTP/1.1 client on raw asyncio streams (one prepared request, responses
    read by Content-Length) under uvloop: an httpx client spends more CPU per request than the server does,
    and here it shares the machine's cores with the server, so it would measure itself.
    """
    import uvloop

    target = httpx.URL(url, params=params)
    request = (f"GET {target.raw_path.decode()} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
               f"Authorization: Bearer {TOKEN}\r\nAccept: application/json\r\n\r\n").encode()

    async def run() -> dict[str, float]:
        latencies: list[float] = []
        errors = 0
        stop = 0.0

        async def get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            return status

        async def worker() -> None:
            nonlocal errors
            reader, writer = await asyncio.open_connection(target.host, target.port)
            try:
                for _ in range(5):  # warm-up (engines, caches)
                    await get(reader, writer)
                while time.perf_counter() < stop:
                    t0 = time.perf_counter()
                    status = await get(reader, writer)
                    latencies.append(time.perf_counter() - t0)
                    errors += status != 200
            finally:
                writer.close()

        stop = time.perf_counter() + seconds
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
        latencies.sort()
        return {"p50_ms": statistics.median(latencies) * 1000,
                "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
                "rps": len(latencies) / elapsed, "errors": errors, "requests": len(latencies)}

    return uvloop.run(run())


async def ingest(base: str, points: int, per_request: int, clients: int) -> dict[str, float]:
    """Points/s through the batch tracking endpoint, from the first request until the points are queryable."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=f"{base}/api/v1", headers=headers, timeout=120) as client:
        run = (await client.post("/runs", json={"experiment": "bench-ingest"})).json()
        run_id = run["run_id"]
        # The bodies are serialized before the clock starts: what is measured is the service, not json.dumps.
        queue = [json.dumps({"metrics": [{"key": "loss", "values": [1.0 / (1 + s) for s in steps],
                                          "steps": list(steps)}]}).encode()
                 for steps in (range(s, min(s + per_request, points)) for s in range(0, points, per_request))]
        last_seq = 0
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal last_seq
            while queue:
                body = queue.pop()
                response = await client.post(f"/runs/{run_id}/log-batch", content=body,
                                             headers={"Content-Type": "application/json"})
                response.raise_for_status()
                last_seq = max(last_seq, response.json()["seq"])

        await asyncio.gather(*(worker() for _ in range(clients)))
        appended = time.perf_counter() - start
        response = await client.get(f"/runs/{run_id}/metrics/loss",
                                    params={"max_points": 100, "min_seq": last_seq}, timeout=120)
        response.raise_for_status()
        total = response.json()["total_points"]
        queryable = time.perf_counter() - start
    assert total == points, f"{total} of {points} points queryable"
    return {"append_points_s": points / appended, "points_s": points / queryable, "seconds": queryable}


def baselines(data_dir: Path, long_id: str, repeat: int = 200) -> dict[str, float]:
    """The same work in-process, without HTTP: runs search (SQL) and the series query (DuckDB), median ms."""
    from mlhub.analytics import QueryEngine
    from mlhub.api.queries import search_runs
    from mlhub.api.series import read_series
    from mlhub.readmodel import create_engine

    engine = create_engine(f"sqlite:///{(data_dir / 'readmodel.db').resolve()}")
    times: list[float] = []
    with engine.connect() as conn:
        for _ in range(repeat):
            t0 = time.perf_counter()
            search_runs(conn, experiment_ids=[], filter_text=None, order_by=None, max_results=100, page_token=None)
            times.append(time.perf_counter() - t0)
    engine.dispose()
    series: list[float] = []
    with QueryEngine(data_dir / "metrics") as q:
        for _ in range(repeat):
            t0 = time.perf_counter()
            read_series(q, long_id, "loss", 1000)
            series.append(time.perf_counter() - t0)
    return {"runs_ms": statistics.median(times) * 1000, "series_ms": statistics.median(series) * 1000}


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the API exited with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def _wait_caught_up(base: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(f"{base}/api/v1/readyz", timeout=5).json()
        if body.get("lag") and all(v == 0 for v in body["lag"].values()):
            return
        time.sleep(0.2)
    raise SystemExit("the projectors did not catch up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--long-points", type=int, default=100_000)
    parser.add_argument("--ingest-points", type=int, default=2_000_000)
    parser.add_argument("--ingest-per-request", type=int, default=50_000)
    parser.add_argument("--ingest-clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (one a core)")
    parser.add_argument("--sync", default="always", help="fsync policy of the embedded nats-server")
    parser.add_argument("--only", choices=("all", "ingest"), default="all",
                        help="ingest: skip the read loads (an A/B of the write path)")
    parser.add_argument("--ingest-rounds", type=int, default=1,
                        help="ingests in a row (a new run each); the median is reported, every round printed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mlhub-bench-api-") as tmp:
        data_dir = Path(tmp) / "data"
        nats = EmbeddedNats(data_dir / "nats", sync=args.sync)
        nats_url = nats.start()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            async def do_seed() -> str:
                async with EventLog(nats_url) as log:
                    return await seed(log, args.runs, args.long_points)

            t0 = time.perf_counter()
            long_id = asyncio.run(do_seed())
            print(f"seeded {args.runs} runs and a {args.long_points:,}-point run in {time.perf_counter() - t0:.1f}s")
            env = {**os.environ, "MLHUB_DATA_DIR": str(data_dir), "MLHUB_NATS_URL": nats_url,
                   "MLHUB_API_TOKENS": f"{TOKEN}:admin", "MLHUB_COMPACT_INTERVAL_S": "2",
                   "MLHUB_SEAL_INTERVAL_S": "0", "MLHUB_API_MIN_SEQ_WAIT_S": "60"}
            log_file = (Path(tmp) / "procs.log").open("wb")
            for name in ("sql", "metrics"):  # as `mlhub up` runs them: one process each
                procs.append(subprocess.Popen([sys.executable, "-m", "mlhub.cli", "projector", "--only", name],
                                              env=env, stdout=log_file, stderr=subprocess.STDOUT))
            port = _free_port()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "mlhub.api:create_app", "--host", "127.0.0.1",
                 "--port", str(port), "--workers", str(args.workers), "--log-level", "warning", "--no-access-log"],
                env=env, stdout=log_file, stderr=subprocess.STDOUT))
            base = f"http://127.0.0.1:{port}"
            _wait_http(f"{base}/healthz", procs[-1])
            _wait_caught_up(base)
            time.sleep(3)  # let the projector compact the freshly written metric files once
            if args.only == "all":
                base_line = baselines(data_dir, long_id)
                floor = load(f"{base}/healthz", args.clients, args.seconds)
                runs = load(f"{base}/api/v1/runs", args.clients, args.seconds)
                series = load(f"{base}/api/v1/runs/{long_id}/metrics/loss", args.clients, args.seconds,
                              {"max_points": 1000})
            rounds = []
            for i in range(args.ingest_rounds):
                rounds.append(asyncio.run(ingest(base, args.ingest_points, args.ingest_per_request,
                                                 args.ingest_clients)))
                print(f"ingest round {i + 1}: {rounds[-1]['points_s']:,.0f} points/s until queryable, appended at "
                      f"{rounds[-1]['append_points_s']:,.0f} points/s")
            ingested = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            nats.stop()

    def line(name: str, r: dict[str, float], base_ms: float, target: str) -> None:
        print(f"{name:<34} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  {r['rps']:8.0f} req/s  "
              f"(in-process baseline {base_ms:.2f} ms: x{r['p50_ms'] / base_ms:.1f})  errors {int(r['errors'])}  "
              f"target {target}")

    if args.only == "ingest":
        print(f"{'tracking ingest, end to end':<34} median of {args.ingest_rounds}: {ingested['points_s']:,.0f} "
              f"points/s until queryable, appended at {ingested['append_points_s']:,.0f} points/s")
        return
    print(f"\n{args.clients} concurrent clients, {args.seconds:g}s each, {args.workers} uvicorn worker(s), "
          f"{os.cpu_count()} CPUs (clients share the machine)")
    print(f"{'GET /healthz (HTTP stack floor)':<34} p50 {floor['p50_ms']:7.2f} ms  p99 {floor['p99_ms']:7.2f} ms  "
          f"{floor['rps']:8.0f} req/s  (the most this client and server reach on this machine)")
    line("GET /runs (page of 100 of 1,000)", runs, base_line["runs_ms"],
         f"p50 <= {TARGETS['runs_p50_ms']:g} ms, >= {TARGETS['runs_rps']:,.0f} req/s")
    line("GET series, 1,000 of 100,000 pts", series, base_line["series_ms"],
         f"p50 <= {TARGETS['series_p50_ms']:g} ms")
    print(f"{'tracking ingest, end to end':<34} {ingested['points_s']:,.0f} points/s until queryable "
          f"({args.ingest_points:,} points in {ingested['seconds']:.2f}s; appended at "
          f"{ingested['append_points_s']:,.0f} points/s)  target >= {TARGETS['ingest_points_s']:,.0f}")


if __name__ == "__main__":
    main()
