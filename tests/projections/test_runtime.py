"""The projector runtime: several projectors at once, event-type filters, lag, follow mode, one instance only."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlhub.eventlog import EventLog
from mlhub.events import Envelope, ExperimentCreated, MetricsLogged, TagsSet
from mlhub.projections import (
    Batch,
    BufferingProjector,
    DeadLetter,
    Projector,
    ProjectorLocked,
    SqlProjector,
    projector_lag,
    projector_lock,
    run_projectors,
    run_until,
)
from mlhub.readmodel import tables as t


class MetricCounter:
    """A projector of another kind: counts metric points, keeps its checkpoint in memory."""

    name = "metric-counter"
    event_types: frozenset[str] | None = frozenset({"run.metrics_logged"})

    def __init__(self) -> None:
        self.position = 0
        self.points = 0
        self.seen: list[str] = []

    def checkpoint(self) -> int:
        return self.position

    def apply(self, batch: Batch) -> Sequence[DeadLetter]:
        for item in batch.events:
            if item.seq > self.position and item.envelope is not None:
                assert isinstance(item.envelope.event, MetricsLogged)
                self.points += item.envelope.event.num_points
                self.seen.append(item.envelope.type)
        self.position = max(self.position, batch.last_seq)
        return []


async def _append_mixed(log: EventLog, n: int) -> int:
    last = 0
    for i in range(n):
        last = (await log.append(Envelope(event=TagsSet(run_id="r", tags={"i": str(i)}), producer="t"))).seq
        batch = MetricsLogged.from_points("r", [("loss", float(i), i, 0, i), ("acc", 0.5, i, 0, i)])
        last = (await log.append(Envelope(event=batch, producer="t"))).seq
    return last


def _count(engine: Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


async def test_projectors_run_concurrently_with_own_checkpoints_filters_and_lag(
    event_log: EventLog, database: Engine
) -> None:
    sql, counter = SqlProjector(database), MetricCounter()
    assert isinstance(counter, Projector) and isinstance(sql, Projector)
    last = await _append_mixed(event_log, 25)
    assert await projector_lag(event_log, [sql, counter]) == {"sql": last, "metric-counter": last}

    positions = await run_until(event_log, [sql, counter], max_batch=7)
    assert positions == {"sql": last, "metric-counter": last}
    assert counter.points == 50 and set(counter.seen) == {"run.metrics_logged"} and len(counter.seen) == 25
    assert await projector_lag(event_log, [sql, counter]) == {"sql": 0, "metric-counter": 0}
    with database.connect() as conn:
        loss = conn.execute(sa.select(t.metric_summaries.c["count"]).where(t.metric_summaries.c.key == "loss"))
        assert loss.scalar_one() == 25

    # run_until an explicit, earlier sequence stops there (and a later call carries on from it).
    more = await _append_mixed(event_log, 2)
    assert (await run_until(event_log, [sql], seq=more - 1))["sql"] == more - 1
    assert await projector_lag(event_log, [sql]) == {"sql": 1}


async def test_follow_mode_applies_new_events_until_cancelled_and_releases_its_lock(
    event_log: EventLog, database: Engine
) -> None:
    sql = SqlProjector(database)
    task = asyncio.create_task(run_projectors(event_log, [sql], locks=lambda n: projector_lock(database, n)))
    for i in range(3):
        await event_log.append(Envelope(event=ExperimentCreated(experiment_id=f"e{i}", name="x"), producer="t"))
    for _ in range(200):
        if _count(database, t.experiments) == 3:
            break
        await asyncio.sleep(0.05)
    assert _count(database, t.experiments) == 3
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lock = projector_lock(database, "sql")
    assert lock.try_acquire(), "a stopped runtime must give its lock back"
    lock.release()


async def test_only_one_instance_per_projector_writes(event_log: EventLog, database: Engine) -> None:
    holder = projector_lock(database, "sql")
    assert holder.try_acquire()
    other = projector_lock(database, "sql")
    assert not other.try_acquire()
    unrelated = projector_lock(database, "metrics")
    assert unrelated.try_acquire()
    unrelated.release()

    last = await _append_mixed(event_log, 3)
    sql = SqlProjector(database)

    with pytest.raises(ProjectorLocked, match="already running elsewhere"):
        await run_until(event_log, [sql], locks=lambda n: projector_lock(database, n))

    # A standby instance waits for the lock and writes nothing meanwhile; it takes over when it is released.
    standby = asyncio.create_task(run_projectors(event_log, [sql], until_seq=last, lock_poll_s=0.05,
                                                 locks=lambda n: projector_lock(database, n)))
    await asyncio.sleep(0.5)
    assert not standby.done() and sql.checkpoint() == 0 and _count(database, t.tags) == 0
    holder.check()
    holder.release()
    assert await asyncio.wait_for(standby, 20) == {"sql": last}
    assert _count(database, t.tags) == 1


class BufferingCounter(MetricCounter):
    """A projector that only buffers in apply; flush() makes its points and checkpoint durable."""

    name = "buffering-counter"

    def __init__(self) -> None:
        super().__init__()
        self.durable_position = 0
        self.durable_points = 0
        self.flushes = 0

    def checkpoint(self) -> int:
        return self.durable_position

    def flush(self) -> int:
        self.flushes += 1
        self.durable_position, self.durable_points = self.position, self.points
        return self.durable_position


async def test_a_buffering_projector_is_flushed_when_idle_caught_up_and_stopped(event_log: EventLog) -> None:
    counter = BufferingCounter()
    assert isinstance(counter, BufferingProjector)
    last = await _append_mixed(event_log, 5)
    assert await run_until(event_log, [counter], max_batch=3) == {"buffering-counter": last}
    assert (counter.durable_position, counter.durable_points) == (last, 10)

    task = asyncio.create_task(run_projectors(event_log, [counter]))
    last = await _append_mixed(event_log, 1)
    for _ in range(100):  # flushed once the stream is idle, while the runtime keeps following it
        if counter.durable_position == last:
            break
        await asyncio.sleep(0.05)
    assert (counter.durable_position, counter.durable_points) == (last, 12) and not task.done()
    last = await _append_mixed(event_log, 1)
    for _ in range(100):
        if counter.position == last:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (counter.durable_position, counter.durable_points) == (last, 14)  # flushed on the way out
