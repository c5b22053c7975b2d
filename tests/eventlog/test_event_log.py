"""The event log against a real nats-server: append, read back, concurrency, dedup, immutability, replay."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from nats.js.api import StreamConfig
from nats.js.errors import APIError

from mlhub.errors import AppendRejected, ConcurrencyError, EventLogUnavailable, StreamConfigConflict
from mlhub.eventlog import STREAM_NAME, EmbeddedNats, EventLog, StreamSpec
from mlhub.events import (
    Envelope,
    MetricsLogged,
    RunCreated,
    RunFinished,
    RunStarted,
    TagsSet,
    aggregate_subject_filter,
)


def env(event: object) -> Envelope:
    return Envelope(event=event, producer="test")  # type: ignore[arg-type]


async def test_append_and_read_back(event_log: EventLog) -> None:
    created = env(RunCreated(run_id="r1", experiment_id="e", name="first"))
    started = env(RunStarted(run_id="r1", attempt=1, worker_id="w"))
    first = await event_log.append(created, expected_version=0)
    second = await event_log.append(started, expected_version=first.seq)
    await event_log.append(env(RunCreated(run_id="r2", experiment_id="e", name="other")))
    agg = await event_log.read_aggregate("run", "r1")
    assert agg.version == second.seq
    assert [r.seq for r in agg.events] == [first.seq, second.seq]
    assert [r.envelope for r in agg.events] == [created, started]
    empty = await event_log.read_aggregate("run", "nobody")
    assert empty.events == [] and empty.version == 0


async def test_twenty_concurrent_writers_with_the_same_expected_version(event_log: EventLog) -> None:
    base = await event_log.append(env(RunCreated(run_id="race", experiment_id="e", name="r")), expected_version=0)
    writers = [
        event_log.append(env(TagsSet(run_id="race", tags={"writer": str(i)})), expected_version=base.seq)
        for i in range(20)
    ]
    results = await asyncio.gather(*writers, return_exceptions=True)
    wins = [r for r in results if not isinstance(r, BaseException)]
    conflicts = [r for r in results if isinstance(r, ConcurrencyError)]
    assert len(wins) == 1 and len(conflicts) == 19, results
    assert all(c.expected == base.seq and c.actual == wins[0].seq for c in conflicts)
    agg = await event_log.read_aggregate("run", "race")
    assert len(agg.events) == 2


async def test_an_append_retried_with_the_same_event_id_is_stored_once(event_log: EventLog) -> None:
    event = env(TagsSet(run_id="dup", tags={"a": "1"}))
    first = await event_log.append(event)
    again = await event_log.append(event)
    assert again.seq == first.seq and again.duplicate and not first.duplicate
    assert await event_log.last_sequence() == first.seq


async def test_lost_acknowledgement_retry_of_a_conditional_append_is_recognized(event_log: EventLog) -> None:
    """The expected-sequence check runs before dedup: a retry gets 'wrong last sequence', not a duplicate ack.

    The log must see that the first event after the expected version is its own and report success, even when
    another writer has appended after it meanwhile.
    """
    base = await event_log.append(env(RunCreated(run_id="ack", experiment_id="e", name="r")), expected_version=0)
    mine = env(RunStarted(run_id="ack", attempt=1))
    stored = await event_log.append(mine, expected_version=base.seq)  # imagine this ack got lost
    later = await event_log.append(env(TagsSet(run_id="ack", tags={"x": "y"})), expected_version=stored.seq)
    retry = await event_log.append(mine, expected_version=base.seq)
    assert retry.seq == stored.seq and retry.duplicate
    # A different event with the same stale version is a real conflict.
    with pytest.raises(ConcurrencyError, match="is at version"):
        await event_log.append(env(RunFinished(run_id="ack")), expected_version=base.seq)
    agg = await event_log.read_aggregate("run", "ack")
    assert [r.seq for r in agg.events] == [base.seq, stored.seq, later.seq]


IN_FLIGHT: dict[str, object] = {"error": {"code": 400, "err_code": 10164, "description": "wrong last sequence"}}


async def test_a_guarded_append_answered_in_flight_is_sent_again_until_checked(
        event_log: EventLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replicated stream's leader answers 10164 ("wrong last sequence", no number) without checking anything
    while an earlier guarded write to the subject is in flight there, often the writer's own previous append
    acknowledged a moment before. One server never does: the first answers are faked here, then the real ones.
    The append is sent again until checked: stored once, or, with a stale version, a ConcurrencyError."""
    base = await event_log.append(env(RunCreated(run_id="fly", experiment_id="e", name="r")), expected_version=0)
    publish, publish_batch = event_log._publish, event_log._publish_batch
    refusals = {"single": 2, "batch": 2}

    async def single(subject: str, data: bytes, headers: dict[str, str]) -> dict[str, object]:
        if refusals["single"]:
            refusals["single"] -= 1
            return IN_FLIGHT
        return await publish(subject, data, headers)

    async def batch(messages: list[tuple[str, bytes, dict[str, str]]]) -> dict[str, object]:
        if refusals["batch"]:
            refusals["batch"] -= 1
            return IN_FLIGHT
        return await publish_batch(messages)

    monkeypatch.setattr(event_log, "_publish", single)
    monkeypatch.setattr(event_log, "_publish_batch", batch)
    started = await event_log.append(env(RunStarted(run_id="fly", attempt=1)), expected_version=base.seq)
    assert refusals["single"] == 0 and not started.duplicate
    tags = [env(TagsSet(run_id="fly", tags={"k": str(i)})) for i in range(2)]
    stored = await event_log.append_atomic(tags, guards={0: (aggregate_subject_filter("run", "fly"), started.seq)})
    assert refusals["batch"] == 0 and [r.seq for r in stored] == [started.seq + 1, started.seq + 2]
    refusals.update(single=1, batch=1)
    with pytest.raises(ConcurrencyError, match="is at version"):
        await event_log.append(env(RunFinished(run_id="fly")), expected_version=base.seq)
    with pytest.raises(ConcurrencyError):
        await event_log.append_atomic([env(TagsSet(run_id="fly", tags={"k": "late"})), env(RunFinished(run_id="fly"))],
                                      guards={0: (aggregate_subject_filter("run", "fly"), base.seq)})
    agg = await event_log.read_aggregate("run", "fly")
    assert [r.seq for r in agg.events] == [base.seq, started.seq, *(r.seq for r in stored)]


async def test_deleting_or_purging_a_message_is_refused(event_log: EventLog) -> None:
    await event_log.append(env(TagsSet(run_id="keep", tags={"a": "1"})))
    jsm = event_log.nc.jetstream()
    with pytest.raises(APIError):
        await jsm.delete_msg(STREAM_NAME, 1)
    with pytest.raises(APIError):
        await jsm.purge_stream(STREAM_NAME)
    with pytest.raises(APIError):
        await jsm.purge_stream(STREAM_NAME, subject="mlhub.ev.run.keep.>")
    assert await event_log.last_sequence() == 1
    assert len((await event_log.read_aggregate("run", "keep")).events) == 1


async def test_ensure_stream_is_idempotent_and_names_conflicting_settings(nats_url: str) -> None:
    async with EventLog(nats_url) as log:
        await log.ensure_stream()
        await log.ensure_stream()
    other = EventLog(nats_url, spec=StreamSpec(duplicate_window_s=30))
    await other.connect()
    try:
        with pytest.raises(StreamConfigConflict, match="duplicate_window is 600.0 on the server"):
            await other.ensure_stream()
    finally:
        await other.close()


async def test_a_stream_created_without_delete_protection_is_refused(nats_url: str) -> None:
    log = EventLog(nats_url)
    await log.connect()
    try:
        config: StreamConfig = StreamSpec().config()
        config.deny_delete = False
        await log.js.add_stream(config)
        with pytest.raises(StreamConfigConflict, match="deny_delete is False on the server, mlhub requires True"):
            await log.ensure_stream()
    finally:
        await log.close()


async def test_replay_from_a_sequence_and_by_subject(event_log: EventLog) -> None:
    events = [env(TagsSet(run_id=f"r{i % 3}", tags={"i": str(i)})) for i in range(30)]
    for e in events:
        await event_log.append(e)
    all_seqs = [r.seq async for r in event_log.replay()]
    assert all_seqs == list(range(1, 31))
    tail = [r async for r in event_log.replay(from_seq=26)]
    assert [r.seq for r in tail] == [26, 27, 28, 29, 30]
    assert [r.envelope for r in tail] == events[25:]
    r1 = [r async for r in event_log.replay(subject_filter=aggregate_subject_filter("run", "r1"))]
    assert [r.envelope for r in r1] == [e for e in events if e.aggregate_id == "r1"]
    assert [r async for r in event_log.replay(from_seq=31)] == []


async def test_follow_replay_sees_events_appended_later(event_log: EventLog) -> None:
    await event_log.append(env(TagsSet(run_id="f", tags={"n": "0"})))
    seen: list[int] = []

    async def follow() -> None:
        async for r in event_log.replay(follow=True):
            seen.append(r.seq)
            if len(seen) == 3:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.2)
    await event_log.append(env(TagsSet(run_id="f", tags={"n": "1"})))
    await event_log.append(env(TagsSet(run_id="f", tags={"n": "2"})))
    await asyncio.wait_for(task, 10)
    assert seen == [1, 2, 3]


async def test_bulk_append_of_metric_batches(event_log: EventLog) -> None:
    batches = [
        env(MetricsLogged.from_points("bulk", [("loss", float(i), b * 1000 + i, b, i) for i in range(1000)]))
        for b in range(50)
    ]
    results = await event_log.append_many(batches, max_in_flight=8)
    assert sorted(r.seq for r in results) == list(range(1, 51))
    again = await event_log.append_many(batches[:10])
    assert all(r.duplicate for r in again)
    total = 0
    async for r in event_log.replay():
        assert isinstance(r.envelope.event, MetricsLogged)
        total += r.envelope.event.num_points
    assert total == 50_000


async def test_an_oversized_event_is_refused_with_a_clear_error_and_nothing_stored(event_log: EventLog) -> None:
    huge = env(MetricsLogged.from_points("big", [("loss", 0.1, i, 0, i) for i in range(60_000)]))
    with pytest.raises(AppendRejected, match="split the batch"):
        await event_log.append(huge)
    assert await event_log.last_sequence() == 0


async def test_messages_are_strict_json_with_only_the_msg_id_header(event_log: EventLog) -> None:
    event = env(TagsSet(run_id="h", tags={"a": "1"}))
    await event_log.append(event, expected_version=0)
    msg = await event_log.js.get_msg(STREAM_NAME, 1)
    assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == str(event.event_id)
    assert msg.data is not None and json.loads(msg.data)["event_id"] == str(event.event_id)


async def test_an_unreachable_server_is_event_log_unavailable_naming_the_url() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        log = EventLog(f"nats://127.0.0.1:{port}", connect_timeout_s=0.5)
        with pytest.raises(EventLogUnavailable, match=f"127.0.0.1:{port}"):
            await log.connect()


async def test_a_server_too_old_for_per_aggregate_checks_is_refused(tmp_path: Path) -> None:
    """The machine's Debian nats-server is 2.9: start our own instance of it on a free port (never 4222)."""
    old = Path("/usr/sbin/nats-server")
    if not old.exists():
        pytest.fail("this test needs the machine's preinstalled nats-server 2.9 at /usr/sbin/nats-server")
    server = EmbeddedNats(tmp_path / "old", binary=old, sync=None)  # 2.9 knows no sync_interval
    url = server.start()
    try:
        with pytest.raises(EventLogUnavailable, match=r"nats-server 2\.9\.\d+ .* version >= 2\.12"):
            await EventLog(url).connect()
    finally:
        server.stop()
