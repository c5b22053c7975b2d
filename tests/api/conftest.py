"""Fixtures of the API tests: the real app (its lifespan run) over the test's own nats-server, a real read
model (SQLite, or a fresh PostgreSQL schema) and real metric tables, with the projectors running in the
background as `mlhub projector` runs them; an httpx client talks to the app through ASGI."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from mlhub.api import create_app
from mlhub.eventlog import EventLog
from mlhub.projections import build_projectors, run_projectors
from mlhub.readmodel import create_engine, migrate
from mlhub.readmodel.testing import postgres_test_url
from mlhub.settings import Settings

READER = "reader-token-0001"
WRITER = "writer-token-0001"
ADMIN = "admin-token-00001"
TOKENS = f"{READER}:reader,{WRITER}:writer,{ADMIN}:admin"


def auth(token: str) -> dict[str, str]:
    """The Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def database_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """A read-model URL: a SQLite file, or a PostgreSQL URL whose search_path is a fresh schema (dropped after)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'readmodel.db'}"
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(postgres_test_url())
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{postgres_test_url()}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def api_settings(tmp_path: Path, nats_url: str, url: str, **extra: Any) -> Settings:
    """Settings of a test app: its own data dir, the test's nats-server and read model, the three tokens."""
    return Settings(data_dir=tmp_path / "data", nats_url=nats_url, database_url=url, api_tokens=TOKENS,
                    api_min_seq_wait_s=10.0, api_metrics_refresh_s=0.0, **extra)


@contextlib.asynccontextmanager
async def projecting(settings: Settings, event_log: EventLog) -> AsyncIterator[None]:
    """The projectors of `mlhub projector` (SQL read model, metric tables) following the log until exit."""
    engine = create_engine(settings.resolved_database_url, writer=True)
    migrate(engine)
    task = asyncio.create_task(run_projectors(event_log, build_projectors(settings, engine), max_failures=3))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        engine.dispose()


@dataclass
class Api:
    """A running app: its client (no token by default), settings and event log."""

    client: httpx.AsyncClient
    settings: Settings
    event_log: EventLog

    async def get(self, path: str, token: str | None = READER, **kwargs: Any) -> httpx.Response:
        """GET /api/v1<path> with a token."""
        return await self.client.get(f"/api/v1{path}", headers=auth(token) if token else {}, **kwargs)

    async def post(self, path: str, body: Any = None, token: str | None = WRITER, **kwargs: Any) -> httpx.Response:
        """POST /api/v1<path> with a JSON body and a token."""
        return await self.client.post(f"/api/v1{path}", json=body, headers=auth(token) if token else {}, **kwargs)


@contextlib.asynccontextmanager
async def running_api(settings: Settings, event_log: EventLog, *, projectors: bool = True) -> AsyncIterator[Api]:
    """The app with its lifespan entered (and the projectors running unless told not to)."""
    app = create_app(settings, event_log=event_log)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        if projectors:
            await stack.enter_async_context(projecting(settings, event_log))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mlhub.test",
                                   timeout=30.0)
        await stack.enter_async_context(client)
        yield Api(client, settings, event_log)


@pytest.fixture
async def api(tmp_path: Path, nats_url: str, event_log: EventLog) -> AsyncIterator[Api]:
    """The app on SQLite with the projectors running."""
    with database_url("sqlite", tmp_path) as url:
        async with running_api(api_settings(tmp_path, nats_url, url), event_log) as running:
            yield running


@pytest.fixture(params=["sqlite", "postgresql"])
async def api_any_db(request: pytest.FixtureRequest, tmp_path: Path, nats_url: str,
                     event_log: EventLog) -> AsyncIterator[Api]:
    """The app on SQLite and on PostgreSQL with the projectors running."""
    with database_url(request.param, tmp_path) as url:
        async with running_api(api_settings(tmp_path, nats_url, url), event_log) as running:
            yield running


async def create_run(api: Api, experiment: str = "exp", **body: Any) -> dict[str, Any]:
    """Create a run through the tracking endpoint; its JSON answer."""
    response = await api.post("/runs", {"experiment": experiment, **body})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result
