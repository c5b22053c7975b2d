"""Exactly-once application (the checkpoint commits with the rows) and poison events going to dead letters."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from mlhub.eventlog import EventLog
from mlhub.events import (
    DomainEvent,
    Envelope,
    ExperimentCreated,
    MetricsLogged,
    ParamsLogged,
    RunCreated,
    TagsSet,
)
from mlhub.projections import (
    ProjectorFailed,
    SqlDeadLetterSink,
    SqlProjector,
    decode_batch,
    run_until,
)
from mlhub.readmodel import checkpoints, dead_letters
from mlhub.readmodel import tables as t


async def append(log: EventLog, *events: DomainEvent) -> list[int]:
    """Append events in order; their stream sequences."""
    return [(await log.append(Envelope(event=e, producer="tests@host"))).seq for e in events]


def summary(engine: Engine, run_id: str, key: str) -> tuple[int, float | None]:
    """(count, max) of a metric summary."""
    table = t.metric_summaries
    with engine.connect() as conn:
        found = conn.execute(sa.select(table.c["count"], table.c.max_value).where(
            table.c.run_id == run_id, table.c.key == key)).one()
    return int(found[0]), found[1]


def points(run_id: str, *values: float) -> MetricsLogged:
    """A metric batch of "loss" values at steps 0, 1, ..."""
    return MetricsLogged.from_points(run_id, [("loss", v, i, 0, i) for i, v in enumerate(values)])


async def test_reapplying_old_events_is_a_no_op(event_log: EventLog, database: Engine) -> None:
    projector = SqlProjector(database)
    await append(event_log, points("r", 1.0, 2.0), points("r", 3.0))
    await run_until(event_log, [projector])
    assert summary(database, "r", "loss") == (3, 3.0)
    old = [m async for m in event_log.replay_raw(1)]

    # The same batch again (a crash between commit and the next read), then one that overlaps new events.
    assert projector.apply(decode_batch(old)) == []
    assert summary(database, "r", "loss") == (3, 3.0)
    (new_seq,) = await append(event_log, points("r", 10.0))
    overlapping = [m async for m in event_log.replay_raw(2)]
    projector.apply(decode_batch(overlapping))
    assert summary(database, "r", "loss") == (4, 10.0)
    assert projector.checkpoint() == new_seq

    # Another projector instance starting from an older position (checkpoint read from the same table).
    await run_until(event_log, [SqlProjector(database)])
    assert summary(database, "r", "loss") == (4, 10.0)


async def test_a_crash_before_commit_leaves_neither_rows_nor_checkpoint(
    event_log: EventLog, database: Engine
) -> None:
    projector = SqlProjector(database)
    first = await append(event_log, points("r", 1.0))
    await run_until(event_log, [projector])
    await append(event_log, points("r", 5.0), TagsSet(run_id="r", tags={"a": "b"}))

    def crash_on_checkpoint(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "projector_checkpoints" in statement and "DO UPDATE" in statement:
            raise sa.exc.OperationalError(statement, None, Exception("simulated crash at commit"))

    event.listen(database, "before_cursor_execute", crash_on_checkpoint)
    try:
        with pytest.raises(ProjectorFailed, match="simulated crash"):
            await run_until(event_log, [projector], max_failures=2)
    finally:
        event.remove(database, "before_cursor_execute", crash_on_checkpoint)
    assert summary(database, "r", "loss") == (1, 1.0)  # the failed batch's rows were rolled back with it
    with database.connect() as conn:
        assert checkpoints(conn) == {"sql": first[0]}
        assert conn.execute(sa.select(sa.func.count()).select_from(t.tags)).scalar_one() == 0
        assert dead_letters(conn) == []  # an unavailable database is never blamed on the event

    await run_until(event_log, [projector])
    assert summary(database, "r", "loss") == (2, 5.0)


async def test_poison_events_are_dead_lettered_and_the_events_after_them_applied(
    event_log: EventLog, database: Engine
) -> None:
    projector = SqlProjector(database)
    (created,) = await append(event_log, ExperimentCreated(experiment_id="e", name="e"))
    garbage = b'{"not": "an event"'
    wrong_payload = (b'{"event_id":"4a1f6f0e-1c1e-4a57-9d3b-3b2d7f0e0a11","type":"run.metrics_logged",'
                     b'"schema_version":2,"occurred_at":"2026-01-01T00:00:00.000000Z","producer":"x",'
                     b'"aggregate_type":"run","aggregate_id":"x","payload":{"run_id":"x","series":[]}}')
    raw = []
    for data in (garbage, wrong_payload):
        ack = await event_log.js.publish("mlhub.ev.run.x.metrics_logged", data)
        raw.append((ack.seq, data))
    good = await append(
        event_log,
        ParamsLogged(run_id="r", params={"lr": "0.1"}),
        ParamsLogged(run_id="r", params={"lr": "0.2", "momentum": "0.9"}),  # a param cannot change: poison
        RunCreated(run_id="r", experiment_id="e", name="after the poison"),
        TagsSet(run_id="r", tags={"k": "v"}),
    )
    positions = await run_until(event_log, [projector], dead_letters=SqlDeadLetterSink(database))
    assert positions == {"sql": good[-1]}

    with database.connect() as conn:
        letters = dead_letters(conn, "sql")
        params = conn.execute(sa.select(t.params.c.key, t.params.c.value)).all()
        run = conn.execute(sa.select(t.runs.c.name, t.runs.c.last_seq)).one()
        tag = conn.execute(sa.select(t.tags.c.value)).scalar_one()
        experiment = conn.execute(sa.select(t.experiments.c.last_seq)).scalar_one()
    assert [(d.seq, d.subject, d.data) for d in letters] == [
        (raw[0][0], "mlhub.ev.run.x.metrics_logged", garbage),
        (raw[1][0], "mlhub.ev.run.x.metrics_logged", wrong_payload),
        (good[1], "mlhub.ev.run.r.params_logged", letters[2].data),
    ]
    assert "EventDecodeError" in letters[0].error and "not JSON" in letters[0].error
    assert "EventDecodeError" in letters[1].error and "series" in letters[1].error
    assert "ProjectionConflict" in letters[2].error and "'lr'" in letters[2].error
    assert b'"0.2"' in letters[2].data
    assert params == [("lr", "0.1")]  # nothing of the rejected event, not even its new key
    assert run == ("after the poison", good[2]) and tag == "v" and experiment == created
    assert projector.checkpoint() == good[-1]

    # Running again (a restart) neither re-applies nor re-records anything.
    await run_until(event_log, [projector], dead_letters=SqlDeadLetterSink(database))
    with database.connect() as conn:
        assert len(dead_letters(conn)) == 3
