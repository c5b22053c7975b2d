"""The reaper ends silent running runs as crashed, judged on the log's own store times; a run that logs, sends
heartbeats or whose job sends heartbeats is left alone; a crashed run can be resumed (real NATS, real SQLite and
PostgreSQL read models, the SQL projector)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from mlhub.eventlog import EventLog
from mlhub.events import (
    Envelope,
    JobHeartbeat,
    JobQueued,
    RunCrashed,
    RunCreated,
    RunResumed,
    RunStarted,
    RunStatus,
    sha256_of,
)
from mlhub.projections import SqlProjector, run_until
from mlhub.readmodel import migrate
from mlhub.readmodel.testing import DATABASE_KINDS, temporary_database
from mlhub.tracking import InvalidRunState, Reaper, RunEnded, SeriesInput, TrackingService


@pytest.fixture(params=DATABASE_KINDS)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with temporary_database(request.param, tmp_path) as engine:
        migrate(engine)
        yield engine


async def _project(event_log: EventLog, engine: Engine) -> None:
    await run_until(event_log, [SqlProjector(engine)])


async def test_a_silent_run_crashes_and_a_live_one_does_not(event_log: EventLog, database: Engine) -> None:
    service = TrackingService(event_log, producer="test")
    silent = await service.create_run("reaped")
    alive = await service.create_run("reaped")
    await _project(event_log, database)
    reaper = Reaper(event_log, database, service, dead_after_s=0.5, interval_s=0.1)
    assert await reaper.sweep() == []  # nobody has been silent for 0.5 s yet
    await asyncio.sleep(0.7)
    await service.heartbeat(alive.run_id)
    crashed = await reaper.sweep()
    assert [c.run_id for c in crashed] == [silent.run_id] and crashed[0].silent_s >= 0.5
    recorded = (await event_log.read_aggregate("run", silent.run_id)).events
    last = recorded[-1].envelope.event
    assert isinstance(last, RunCrashed) and "MLHUB_RUN_DEAD_AFTER_S=0.5" in last.reason
    assert last.last_seq == recorded[-2].seq and recorded[-1].seq == crashed[0].seq  # the version it judged

    # A crashed run takes nothing more until it is resumed; then logging goes on.
    with pytest.raises(RunEnded, match="crashed"):
        await service.log_batch(silent.run_id, series=[SeriesInput("loss", [1.0])])
    with pytest.raises(InvalidRunState, match="only a crashed run"):
        await service.resume(alive.run_id)
    await service.resume(silent.run_id, actor="ana")
    await service.log_batch(silent.run_id, series=[SeriesInput("loss", [1.0], steps=[3])])
    events = [r.envelope.event for r in (await event_log.read_aggregate("run", silent.run_id)).events]
    assert isinstance(events[-2], RunResumed) and events[-2].resumed_by == "ana"
    await _project(event_log, database)
    assert await reaper.sweep() == []  # the resumed run just logged; `alive` beat 0.7 s ago... at most
    # A sweep judged at a later time ends both (the reaper decides on the log, not on the read model's times).
    later = datetime.now(UTC) + timedelta(seconds=5)
    assert {c.run_id for c in await reaper.sweep(later)} == {silent.run_id, alive.run_id}
    await _project(event_log, database)
    for run_id in (silent.run_id, alive.run_id):
        assert (await service.states.get(run_id, reload=True)).lifecycle.status == RunStatus.CRASHED


async def test_a_job_run_lives_on_its_jobs_heartbeats_and_a_moved_run_is_left_alone(
    event_log: EventLog, database: Engine
) -> None:
    config = {"seed": 1}
    queued = JobQueued(job_id="job1", run_id="run1", experiment_id="e", plugin="digits-mlp", pool="cpu",
                       config=config, config_sha256=sha256_of(config))
    for event in (RunCreated(run_id="run1", experiment_id="e", name="n", job_id="job1"), queued,
                  RunStarted(run_id="run1", attempt=1, worker_id="w")):
        await event_log.append(Envelope(event=event, producer="test"))
    await _project(event_log, database)
    service = TrackingService(event_log, producer="test")
    reaper = Reaper(event_log, database, service, dead_after_s=0.5, interval_s=0.1)
    await asyncio.sleep(0.7)
    await event_log.append(Envelope(event=JobHeartbeat(job_id="job1", attempt=1, worker_id="w"), producer="w"))
    assert await reaper.sweep() == [], "the worker's job heartbeat keeps its run alive"
    # The crash is guarded by the version the reaper saw: a run that logged in between is not ended.
    version = await event_log.last_sequence("mlhub.ev.run.run1.>")
    await service.heartbeat("run1")
    assert await service.crash("run1", observed_version=version, silent_s=9, reason="x") is None
    # A job's run cannot be ended by hand while the job is running: cancel the job.
    with pytest.raises(InvalidRunState, match="mlhub cancel job1"):
        await service.end_by_hand("run1", RunStatus.KILLED, actor="ana")


async def test_the_log_is_asked_only_about_runs_that_may_be_silent(event_log: EventLog, database: Engine) -> None:
    """A lookup fetches a run's last message (a metric batch of up to a few hundred KB for a logging run): a
    run the read model shows getting further is skipped, an idle one is looked up again only once it may be
    dead; the verdict is still the log's."""
    service = TrackingService(event_log, producer="test")
    busy = await service.create_run("reaped")
    idle = await service.create_run("reaped")
    await _project(event_log, database)
    reaper = Reaper(event_log, database, service, dead_after_s=30, interval_s=1)
    assert await reaper.sweep() == [] and reaper.lookups == 2  # a new reaper asks about every run once
    await service.log_batch(busy.run_id, series=[SeriesInput("loss", [1.0] * 1000, steps=list(range(1000)))])
    await _project(event_log, database)
    assert await reaper.sweep() == [] and reaper.lookups == 2  # busy got further, idle is not 30 s silent yet
    later = datetime.now(UTC) + timedelta(seconds=31)
    crashed = await reaper.sweep(later)
    # Both are looked up once they may be dead (busy's move is 31 s old by then); both are, by the log.
    assert reaper.lookups == 4 and {c.run_id for c in crashed} == {busy.run_id, idle.run_id}
    await _project(event_log, database)
    assert await reaper.sweep(later) == [] and reaper.lookups == 4  # ended runs are no candidates
