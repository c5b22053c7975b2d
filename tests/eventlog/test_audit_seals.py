"""Audit seals: chained hashes over ranges of the stream, recomputed from the stored bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mlhub.eventlog import EmbeddedNats, EventLog, seal, verify_seals
from mlhub.events import AuditSealed, Envelope, TagsSet


async def _append(log: EventLog, n: int, start: int = 0) -> None:
    await log.append_many(Envelope(event=TagsSet(run_id=f"run{i % 7}", tags={"value": f"v{i:06d}"}),
                                   producer="test") for i in range(start, start + n))


async def test_seals_chain_and_verify(event_log: EventLog) -> None:
    await _append(event_log, 100)
    first = await seal(event_log, producer="test")
    assert first is not None and (first.first_seq, first.last_seq, first.message_count) == (1, 100, 100)
    assert first.previous_digest is None
    assert await seal(event_log, producer="test", min_messages=5) is None  # only the seal event is unsealed
    await _append(event_log, 50, start=100)
    second = await seal(event_log, producer="test")
    assert second is not None and second.first_seq == 101 and second.last_seq == 151  # 101 is the first seal
    assert second.previous_digest == first.digest
    report = await verify_seals(event_log)
    assert report.ok, report.problems
    assert (report.seals, report.sealed_through, report.unsealed) == (2, 151, 1)
    assert report.last_digest == second.digest


async def test_racing_sealers_never_fork_the_chain(event_log: EventLog) -> None:
    await _append(event_log, 200)
    results = await asyncio.gather(*(seal(event_log, producer=f"s{i}") for i in range(5)))
    assert sum(r is not None for r in results) == 1
    report = await verify_seals(event_log)
    assert report.ok and report.seals == 1


async def test_a_message_altered_on_disk_is_detected(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    url = server.start()
    try:
        async with EventLog(url) as log:
            await _append(log, 300)
            assert await seal(log, producer="test") is not None
            assert (await verify_seals(log)).ok
        server.stop()
        # Behind the server's back: change one tag value inside a stored message (same length).
        blocks = sorted((tmp_path / "nats" / "store").rglob("*.blk"))
        assert blocks, "no JetStream block files found"
        changed = False
        for block in blocks:
            data = block.read_bytes()
            if b'"v000123"' in data:
                block.write_bytes(data.replace(b'"v000123"', b'"v999123"'))
                changed = True
        assert changed
        url = server.start()
        async with EventLog(url) as log:
            report = await verify_seals(log)
        assert not report.ok
        assert any("seal 1..300" in p for p in report.problems), report.problems
    finally:
        server.stop()


def test_seal_event_validates_its_range() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="first_seq 5 is after last_seq 4"):
        AuditSealed(first_seq=5, last_seq=4, message_count=0, digest="0" * 64, previous_digest=None)
