"""Fault injection: kill -9 of nats-server in the middle of 5,000 appends, restart on the same store, finish."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mlhub.eventlog import EmbeddedNats, EventLog
from mlhub.events import Envelope, RunCreated, TagsSet


async def test_kill_9_of_nats_server_during_5000_appends_loses_and_doubles_nothing(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats", sync="always")
    url = server.start()
    log = EventLog(url, ack_timeout_s=1.0, append_deadline_s=60.0)
    try:
        await log.connect()
        await log.ensure_stream()
        envelopes = [Envelope(event=TagsSet(run_id=f"run{i % 50}", tags={"i": str(i)}), producer="t")
                     for i in range(5000)]
        acked = 0

        async def producer() -> None:
            nonlocal acked
            for start in range(0, 5000, 100):
                await log.append_many(envelopes[start:start + 100], max_in_flight=32)
                acked = start + 100

        task = asyncio.create_task(producer())
        while acked < 1500:
            await asyncio.sleep(0.005)
        server.kill()  # SIGKILL: no graceful shutdown, in-flight publishes lose their acks
        killed_at = acked
        await asyncio.sleep(0.5)
        server.restart()
        await asyncio.wait_for(task, 120)
        assert 1500 <= killed_at < 5000, "the kill must land in the middle of the appends"

        # Conditional appends keep working after the restart.
        created = await log.append(Envelope(event=RunCreated(run_id="after", experiment_id="e", name="a"),
                                            producer="t"), expected_version=0)
        assert created.seq == 5001

        ids = [r.envelope.event_id async for r in log.replay(until_seq=5000)]
        assert len(ids) == 5000, "every event stored"
        assert len(set(ids)) == 5000, "none stored twice"
        assert set(ids) == {e.event_id for e in envelopes}
        assert await log.last_sequence() == 5001
    finally:
        await log.close()
        server.stop()
