"""Baselines shared by the benchmarks in this folder (run as scripts: this folder is on sys.path)."""

from __future__ import annotations

import asyncio
import time

from mlhub.eventlog import EventLog


async def nats_py_replay_rate(log: EventLog) -> float:
    """Events/s of nats-py's own ordered push consumer over the whole stream, with a no-op callback."""
    total = await log.last_sequence()
    done = asyncio.Event()
    count = 0

    async def on_msg(msg: object) -> None:
        nonlocal count
        count += 1
        if count == total:
            done.set()

    start = time.perf_counter()
    sub = await log.js.subscribe("mlhub.ev.>", ordered_consumer=True, cb=on_msg,
                                 pending_bytes_limit=512 * 1024 * 1024)
    await done.wait()
    rate = total / (time.perf_counter() - start)
    await sub.unsubscribe()
    return rate
