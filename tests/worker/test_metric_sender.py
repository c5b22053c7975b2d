"""The background metric sender and the MLHubLogger: every point stored exactly once, training never waits."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Sequence

from mlhub.eventlog import EventLog
from mlhub.events import Envelope, MetricPoint, MetricsLogged
from mlhub.worker import MAX_POINTS_PER_EVENT, MetricSender, mlhub_logger_class


async def stored_points(event_log: EventLog, run_id: str) -> list[MetricPoint]:
    """Every point of the run's stored metric events."""
    agg = await event_log.read_aggregate("run", run_id)
    return [p for r in agg.events if isinstance(r.envelope.event, MetricsLogged) for p in r.envelope.event.points()]


async def test_every_point_is_stored_exactly_once_despite_lost_acks(event_log: EventLog) -> None:
    loop = asyncio.get_running_loop()
    calls = {"n": 0}

    def flaky_send(envelopes: Sequence[Envelope]) -> None:
        # Every third send stores the events but "loses" the acknowledgement: the retry sends the same ids.
        asyncio.run_coroutine_threadsafe(event_log.append_many(envelopes), loop).result(30)
        calls["n"] += 1
        if calls["n"] % 3 == 1:
            raise TimeoutError("ack lost")

    sender = MetricSender("run-exactly-once", flaky_send, producer="test", interval_s=0.05, retry_backoff_s=0.01)
    total = 3 * MAX_POINTS_PER_EVENT + 517

    def training() -> None:
        for step in range(total // 11 + 1):
            n = min(11, total - step * 11)
            if n > 0:
                sender.add([MetricPoint(f"m{i}", float(step), step, step // 100, 1) for i in range(n)])

    thread = threading.Thread(target=training)
    thread.start()
    await asyncio.to_thread(thread.join)
    assert await asyncio.to_thread(sender.close, 30)
    assert sender.failures >= 1 and sender.pending == 0
    points = await stored_points(event_log, "run-exactly-once")
    assert len(points) == total
    assert len(set(points)) == total  # (key, value, step, epoch, ts) are distinct by construction
    agg = await event_log.read_aggregate("run", "run-exactly-once")
    assert all(r.envelope.event.num_points <= MAX_POINTS_PER_EVENT for r in agg.events
               if isinstance(r.envelope.event, MetricsLogged))


def test_add_never_waits_on_a_failing_send() -> None:
    def broken(envelopes: Sequence[Envelope]) -> None:
        raise ConnectionError("event log down")

    sender = MetricSender("run-broken", broken, producer="test", interval_s=0.01, retry_backoff_s=0.01)
    start = time.monotonic()
    for step in range(2000):
        sender.add([MetricPoint("loss", float("nan") if step == 7 else 1.0, step, 0, 1)])
    assert time.monotonic() - start < 1.0
    assert not sender.flush(0.3)  # nothing is acknowledged, and flush says so instead of hanging
    assert not sender.close(0.2)
    assert sender.failures >= 1


async def test_logger_converts_values_and_keeps_step_and_epoch(event_log: EventLog) -> None:
    import torch

    loop = asyncio.get_running_loop()

    def send(envelopes: Sequence[Envelope]) -> None:
        asyncio.run_coroutine_threadsafe(event_log.append_many(envelopes), loop).result(30)

    sender = MetricSender("run-logger", send, producer="test", interval_s=0.05)
    logger = mlhub_logger_class()(sender)

    def log() -> None:
        logger.log_metrics({"loss": torch.tensor(0.5), "epoch": 3}, step=10)
        logger.log_metrics({"acc": 0.25, "bad": float("inf")}, step=11)
        logger.finalize("success")

    await asyncio.to_thread(log)
    points = {p.key: p for p in await stored_points(event_log, "run-logger")}
    assert set(points) == {"loss", "acc", "bad"}
    assert (points["loss"].value, points["loss"].step, points["loss"].epoch) == (0.5, 10, 3)
    assert (points["acc"].step, points["acc"].epoch) == (11, 3)
    assert math.isinf(points["bad"].value)
    assert logger.points_logged == 3
    await asyncio.to_thread(sender.close, 10)


async def test_every_batch_says_the_attempt_of_its_sender(event_log: EventLog) -> None:
    loop = asyncio.get_running_loop()

    def send(envelopes: Sequence[Envelope]) -> None:
        asyncio.run_coroutine_threadsafe(event_log.append_many(envelopes), loop).result(30)

    sender = MetricSender("run-attempt-3", send, producer="test", interval_s=0.01, max_points=10, attempt=3)
    sender.add([MetricPoint("train/loss", 1.0 / (s + 1), s, 0, 1_700_000_000_000 + s) for s in range(25)])
    assert await asyncio.to_thread(sender.close, 30)
    agg = await event_log.read_aggregate("run", "run-attempt-3")
    batches = [r.envelope.event for r in agg.events if isinstance(r.envelope.event, MetricsLogged)]
    assert len(batches) == 3 and {b.attempt for b in batches} == {3}
    assert sum(b.num_points for b in batches) == 25
