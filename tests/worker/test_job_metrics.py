"""The worker's JobMetrics (the SDK's one PointBatcher over an event-log sink) and the one MLHubLogger over it:
every point stored exactly once, training never waits, and the logger's rules (epoch entry, missing step, bools,
hyperparameters) are the SDK's."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from tests.client.tiny_fit import EXPECTED, fit_tiny

from mlhub.client.lightning_logger import logger_class
from mlhub.errors import InvalidMetric
from mlhub.eventlog import EventLog
from mlhub.events import POINTS_PER_EVENT, Envelope, MetricPoint, MetricsLogged, ParamsLogged
from mlhub.worker import JobMetrics


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

    sender = JobMetrics("run-exactly-once", flaky_send, producer="test", interval_s=0.05, retry_backoff_s=0.01)
    total = 3 * POINTS_PER_EVENT + 517

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
    assert all(r.envelope.event.num_points <= POINTS_PER_EVENT for r in agg.events
               if isinstance(r.envelope.event, MetricsLogged))


def test_add_never_waits_on_a_failing_send() -> None:
    def broken(envelopes: Sequence[Envelope]) -> None:
        raise ConnectionError("event log down")

    sender = JobMetrics("run-broken", broken, producer="test", interval_s=0.01, retry_backoff_s=0.01)
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

    sender = JobMetrics("run-logger", send, producer="test", interval_s=0.05)
    logger = logger_class()(sender)

    def log() -> None:
        logger.log_metrics({"loss": torch.tensor(0.5), "epoch": 3}, step=10)
        logger.log_metrics({"acc": 0.25, "bad": float("inf")}, step=11)
        logger.log_metrics({"no_step": 1.5})  # no step: the next one (one more than the highest used), as the SDK
        with pytest.raises(InvalidMetric, match="'flag'.*bool"):  # bools refused, the call's other keys logged
            logger.log_metrics({"flag": True, "kept": 2.0}, step=20)
        logger.log_hyperparams({"lr": 0.1, "nested": {"on": True}})  # the worker records params itself
        logger.finalize("success")

    await asyncio.to_thread(log)
    points = {p.key: p for p in await stored_points(event_log, "run-logger")}
    assert set(points) == {"loss", "acc", "bad", "no_step", "kept"}
    assert (points["loss"].value, points["loss"].step, points["loss"].epoch) == (0.5, 10, 3)
    assert (points["acc"].step, points["acc"].epoch) == (11, 3)
    assert (points["no_step"].step, points["no_step"].epoch) == (12, 3)
    assert (points["kept"].value, points["kept"].step) == (2.0, 20)
    assert math.isinf(points["bad"].value)
    assert sender.points_logged == 5
    agg = await event_log.read_aggregate("run", "run-logger")
    assert not any(isinstance(r.envelope.event, ParamsLogged) for r in agg.events)
    await asyncio.to_thread(sender.close, 10)


async def test_a_lightning_fit_through_the_worker_s_sink_stores_what_the_sdk_s_does(event_log: EventLog,
                                                                                    tmp_path: Path) -> None:
    """The tiny fit tests/client/test_lightning_logger.py runs through an SDK Run, through the one MLHubLogger
    over the worker's sink: the same points at the same steps and epochs (tiny_fit.EXPECTED: Lightning's global
    step; "epoch" is no metric), each stored once in the event log, the attempt's number on every batch."""
    loop = asyncio.get_running_loop()

    def send(envelopes: Sequence[Envelope]) -> None:
        asyncio.run_coroutine_threadsafe(event_log.append_many(envelopes), loop).result(30)

    def fit() -> JobMetrics:
        metrics = JobMetrics("run-fit", send, producer="test", interval_s=0.05, attempt=2)
        fit_tiny(logger_class()(metrics), tmp_path)
        assert metrics.pending == 0, "finalize flushed"
        assert metrics.close(10)
        return metrics

    metrics = await asyncio.to_thread(fit)
    points = await stored_points(event_log, "run-fit")
    assert len(points) == metrics.points_logged == 12
    assert {key: sorted((p.step, p.epoch) for p in points if p.key == key)
            for key in {p.key for p in points}} == EXPECTED
    agg = await event_log.read_aggregate("run", "run-fit")
    assert {r.envelope.event.attempt for r in agg.events if isinstance(r.envelope.event, MetricsLogged)} == {2}
