"""Concurrent log-batch requests of one run are committed together (group commit) and still each stored whole
or not at all, each with its own answer: a param conflict refuses one request only, a resend among them is
recognized, and every point is stored exactly once (real NATS)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from mlhub.eventlog import EventLog
from mlhub.events import MetricsLogged, ParamsLogged, RunStatus
from mlhub.tracking import ParamValueChanged, RunEnded, SeriesInput, TrackingService, Written


async def test_concurrent_batches_of_a_run_are_grouped_and_answered_one_by_one(event_log: EventLog) -> None:
    service = TrackingService(event_log, producer="test")
    run = await service.create_run("group")
    keyed = uuid.uuid4()

    def batch(i: int, **extra: object) -> object:
        return service.log_batch(run.run_id, series=[SeriesInput("loss", [float(i)] * 100, list(range(i * 100,
                                                                                                     i * 100 + 100)))],
                                 **extra)

    calls = [batch(i) for i in range(20)]
    calls.append(batch(20, batch_id=keyed))
    calls.append(batch(20, batch_id=keyed))  # the same request twice at once: stored once
    calls.append(service.log_batch(run.run_id, params={"lr": "0.1"}))
    calls.append(service.log_batch(run.run_id, params={"lr": "0.2"}))  # after the first: refused, alone
    answers = await asyncio.gather(*calls, return_exceptions=True)
    refused = [a for a in answers if isinstance(a, BaseException)]
    assert len(refused) == 1 and isinstance(refused[0], ParamValueChanged), refused
    written = [a for a in answers if isinstance(a, Written)]
    assert len(written) == len(calls) - 1
    assert sum(a.duplicate for a in answers[20:22]) == 1
    assert answers[20].seqs == answers[21].seqs

    events = [r.envelope.event for r in (await event_log.read_aggregate("run", run.run_id)).events]
    points = sorted(p.step for e in events if isinstance(e, MetricsLogged) for p in e.points())
    assert points == list(range(2100)), "every point once"
    assert [e.params for e in events if isinstance(e, ParamsLogged)] == [{"lr": "0.1"}]
    # Every answer names where its own events are.
    stored = {r.seq for r in (await event_log.read_aggregate("run", run.run_id)).events}
    assert all(set(a.seqs) <= stored for a in written)


async def test_a_refused_request_of_a_group_costs_the_others_nothing(event_log: EventLog) -> None:
    service = TrackingService(event_log, producer="test")
    run = await service.create_run("group")
    await service.log_batch(run.run_id, params={"opt": "adam"})
    good = [service.log_batch(run.run_id, series=[SeriesInput("acc", [0.5], [i])]) for i in range(5)]
    bad = service.log_batch(run.run_id, params={"opt": "sgd"}, series=[SeriesInput("acc", [0.9], [99])])
    answers = await asyncio.gather(*good, bad, return_exceptions=True)
    assert isinstance(answers[-1], ParamValueChanged) and all(isinstance(a, Written) for a in answers[:-1])
    events = [r.envelope.event for r in (await event_log.read_aggregate("run", run.run_id)).events]
    assert sorted(p.step for e in events if isinstance(e, MetricsLogged) for p in e.points()) == list(range(5))
    with pytest.raises(ParamValueChanged):
        await service.log_batch(run.run_id, params={"opt": "sgd"})


async def test_two_api_processes_on_one_run_move_on_from_each_others_writes(event_log: EventLog) -> None:
    """Two services (as two API processes: each its own cache) append to one run in turns: each conflict is
    resolved by reading what changed, every point is stored once, and an end by one is seen by the other."""
    first, second = TrackingService(event_log, producer="a"), TrackingService(event_log, producer="b")
    run = await first.create_run("two")
    for i in range(10):
        writer = (first, second)[i % 2]
        await writer.log_batch(run.run_id, series=[SeriesInput("loss", [float(i)], [i])])
    await first.log_batch(run.run_id, params={"lr": "0.1"})
    with pytest.raises(ParamValueChanged):  # the other process's param, seen through the conflict
        await second.log_batch(run.run_id, params={"lr": "0.2"}, series=[SeriesInput("loss", [9.0], [99])])
    await first.finish(run.run_id, RunStatus.FINISHED)
    with pytest.raises(RunEnded, match="finished"):
        await second.log_batch(run.run_id, series=[SeriesInput("loss", [1.0], [100])])
    events = [r.envelope.event for r in (await event_log.read_aggregate("run", run.run_id)).events]
    assert sorted(p.step for e in events if isinstance(e, MetricsLogged) for p in e.points()) == list(range(10))


async def test_metric_batches_of_two_processes_on_one_run_do_not_refuse_each_other(event_log: EventLog) -> None:
    """Metric-only batches of five or more events are guarded by the run's lifecycle subjects, not its version:
    two writers' batches go through side by side; an end, or a new attempt, by another writer still refuses a
    batch decided on the older state (and the batch is then decided again)."""
    from mlhub.events import POINTS_PER_EVENT, Envelope, RunStarted

    first, second = TrackingService(event_log, producer="a"), TrackingService(event_log, producer="b")
    run = await first.create_run("two")
    await first.log_batch(run.run_id, series=[SeriesInput("loss", [0.0], [0])])
    await second.log_batch(run.run_id, series=[SeriesInput("loss", [0.0], [1])])  # both know the run now
    conflicts = first.conflicts + second.conflicts
    per = 5 * POINTS_PER_EVENT  # five events a request

    def big(writer: TrackingService, i: int) -> object:
        steps = list(range(10 + i * per, 10 + (i + 1) * per))
        return writer.log_batch(run.run_id, series=[SeriesInput("loss", [1.0] * per, steps)])

    await asyncio.gather(*(big((first, second)[i % 2], i) for i in range(8)))
    assert first.conflicts + second.conflicts == conflicts, "metric batches of two writers refused each other"
    # A new attempt by a third writer: a batch decided on attempt 1 is refused, decided again, stored as 2.
    await event_log.append(Envelope(event=RunStarted(run_id=run.run_id, attempt=2, worker_id="w"), producer="w"))
    await big(first, 8)
    events = [r.envelope.event for r in (await event_log.read_aggregate("run", run.run_id)).events]
    assert {e.attempt for e in events[-5:] if isinstance(e, MetricsLogged)} == {2}
    assert first.conflicts == conflicts + 1
    # An end by the other writer: the stale writer's batch is refused for good, nothing of it stored.
    await second.finish(run.run_id, RunStatus.FINISHED)
    with pytest.raises(RunEnded, match="finished"):
        await big(first, 9)
    events = [r.envelope.event for r in (await event_log.read_aggregate("run", run.run_id)).events]
    steps = sorted(p.step for e in events if isinstance(e, MetricsLogged) for p in e.points())
    assert steps == [0, 1, *range(10, 10 + 9 * per)], "every point of the stored batches once, none of the last"
