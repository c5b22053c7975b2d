"""Stream storage per million metric points: what the event log holds for points as mlhub's producers batch them.

Appends metric events through mlhub's EventLog to a fresh embedded nats-server (R1, file storage) in a temporary
directory, one stream per batch shape, and reads back the stream's own byte count (`stream_info().state.bytes`:
messages with their subjects and headers) and the store directory's size on disk. Values are random doubles (the
worst case for their JSON text; a loss curve with few digits takes less), steps and timestamps increasing.

    uv run python tools/bench/stream_bytes.py [--points 1000000]

Each of a cluster's R replicas stores the whole stream: multiply by MLHUB_STREAM_REPLICAS for the cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
from pathlib import Path

from mlhub.eventlog import EmbeddedNats, EventLog
from mlhub.eventlog.stream import STREAM_NAME
from mlhub.events import Envelope, MetricSeries, MetricsLogged

#: (points per event, keys per event, what produces events of that shape)
SHAPES = [
    (1000, 4, "a busy worker or SDK script (batches of up to POINTS_PER_EVENT)"),
    (100, 4, "an SDK script logging ~200 points/s (one batch per 0.5 s)"),
    (10, 5, "a slow script: 5 keys, 2 steps per batch"),
    (1, 1, "one point per event (the worst case)"),
]


def batch(run_id: str, first_step: int, points: int, keys: int, rng: random.Random) -> Envelope:
    per_key = points // keys
    series = tuple(
        MetricSeries(key=f"train/metric_{k}", values=tuple(rng.random() for _ in range(per_key)),
                     steps=tuple(range(first_step, first_step + per_key)),
                     epochs=tuple((first_step + i) // 1000 for i in range(per_key)),
                     timestamps=tuple(1_760_000_000_000 + 50 * (first_step + i) for i in range(per_key)))
        for k in range(keys))
    return Envelope(event=MetricsLogged(run_id=run_id, series=series), producer="mlhub@worker-1")


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def measure(directory: Path, points: int, per_event: int, keys: int) -> tuple[int, int, int]:
    """(points stored, stream bytes, bytes on disk) for `points` points in events of `per_event` points."""
    rng = random.Random(0)
    with EmbeddedNats(directory / "nats", sync="2m") as server:  # the bytes stored do not depend on the fsync policy
        assert server.url is not None
        async with EventLog(server.url) as log:
            run_ids = [f"{i:032x}" for i in range(16)]  # points spread over 16 runs
            envelopes = [batch(run_ids[b % 16], (b // 16) * (per_event // keys), per_event, keys, rng)
                         for b in range(points // per_event)]
            for start in range(0, len(envelopes), 5000):
                await log.append_many(envelopes[start:start + 5000])
            info = await log.js.stream_info(STREAM_NAME)
            stored = len(envelopes) * (per_event // keys) * keys
            return stored, int(info.state.bytes), du(server.store_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=1_000_000, help="points per shape (1-point events: 1/50)")
    args = parser.parse_args()
    print("| points per event (keys) | produced by | events | stream MB per 1M points | on disk MB per 1M points |")
    print("| --- | --- | --- | --- | --- |")
    for per_event, keys, who in SHAPES:
        points = args.points if per_event >= 10 else args.points // 50
        with tempfile.TemporaryDirectory(prefix="mlhub-stream-bytes-") as tmp:
            stored, stream_bytes, disk = asyncio.run(measure(Path(tmp), points, per_event, keys))
        scale = 1_000_000 / stored / 1e6
        print(f"| {per_event} ({keys}) | {who} | {stored // (per_event // keys * keys):,} | "
              f"{stream_bytes * scale:,.1f} | {disk * scale:,.1f} |")


if __name__ == "__main__":
    main()
