"""What the app holds while it serves: the event log, the read-model engine, the metric query engines, tokens.

Read-your-own-writes: a write answers with the stream sequence(s) it appended; a read given `min_seq` waits
(at most `api_min_seq_wait_s`) until the projection it reads has applied that sequence.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlhub.analytics import MetricTables, QueryEngine, location_from_settings
from mlhub.api.auth import TokenTable
from mlhub.api.errors import ApiError, ProjectionTimeout
from mlhub.api.sqlquery import QueryGate
from mlhub.eventlog import EventLog
from mlhub.readmodel import tables as t
from mlhub.settings import Settings
from mlhub.tracking import TrackingService

#: The SQL projector's name in projector_checkpoints.
SQL_PROJECTOR = "sql"
#: Read-model tables a /query sees (the views runs, params, ... select from them).
QUERY_TABLES = ("experiments", "runs", "params", "tags", "metric_definitions")


class ResponseCache:
    """A small LRU of serialized answers, keyed by what they depend on (including a projection's position, so
    a new commit of that projection makes a new key: nothing stale is served past the freshness interval)."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> bytes | None:
        """The cached answer, or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: bytes) -> None:
        """Remember an answer (the least recently used one goes when full)."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class MetricEngines:
    """DuckDB query engines over the metric tables, reopened when a new Delta commit appears.

    A commit adds a file to the points table's `_delta_log` folder, which changes the folder's mtime: that
    stat is the cheap "anything new?" check, done at most every refresh_s (or at once when forced). Replaced
    engines are not closed: a request may still hold a cursor on one; DuckDB frees it with the last cursor.
    """

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.location = location_from_settings(settings)
        #: DuckDB limits of every engine the API opens (queries and series share them).
        self.threads = settings.api_query_threads
        self.memory_limit_mb = settings.api_query_memory_mb
        self.refresh_s = settings.api_metrics_refresh_s
        self.sql = engine
        self._lock = threading.Lock()
        self._points: tuple[QueryEngine, object, float] | None = None
        self._full: tuple[QueryEngine, object, float] | None = None

    def _stamp(self) -> object:
        return MetricTables(self.location).change_stamp()

    def points_if_fresh(self) -> QueryEngine | None:
        """The points engine when it was checked within refresh_s (no I/O: safe on the event loop), else None."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            cached = self._points
            return cached[0] if cached is not None and time.monotonic() - cached[2] < self.refresh_s else None
        finally:
            self._lock.release()

    def points(self, *, force: bool = False) -> QueryEngine:
        """An engine over the metric tables only (series, compare)."""
        with self._lock:
            self._points = self._fresh(self._points, force, with_tables=False)
            return self._points[0]

    def full(self, *, force: bool = False) -> QueryEngine:
        """An engine over the metric tables and the read model's tables (for /query)."""
        with self._lock:
            self._full = self._fresh(self._full, force, with_tables=True)
            return self._full[0]

    def _fresh(self, cached: tuple[QueryEngine, object, float] | None, force: bool,
               with_tables: bool) -> tuple[QueryEngine, object, float]:
        now = time.monotonic()
        if cached is not None and not force and now - cached[2] < self.refresh_s:
            return cached
        stamp: object = self._stamp()
        if with_tables:
            stamp = (stamp, _sql_checkpoint(self.sql))
        if cached is not None and cached[1] == stamp:
            return (cached[0], stamp, now)
        tables = load_query_tables(self.sql) if with_tables else None
        engine = QueryEngine(self.location, tables, threads=self.threads, memory_limit_mb=self.memory_limit_mb)
        return (engine.open(), stamp, now)


def _sql_checkpoint(engine: Engine) -> int:
    with engine.connect() as conn:
        value = conn.execute(sa.select(t.projector_checkpoints.c.position)
                             .where(t.projector_checkpoints.c.projector == SQL_PROJECTOR)).scalar_one_or_none()
    return int(value or 0)


def load_query_tables(engine: Engine) -> dict[str, pa.Table]:
    """The read-model tables a /query sees, as Arrow (JSON columns as JSON text)."""
    from mlhub.readmodel.arrow import rows_to_arrow

    with engine.connect() as conn:
        return {name: rows_to_arrow(t.metadata.tables[name], conn.execute(sa.select(t.metadata.tables[name]))
                                    .mappings())
                for name in QUERY_TABLES}


@dataclass
class AppState:
    """Everything a request handler needs; built by the app's lifespan."""

    settings: Settings
    event_log: EventLog
    engine: Engine
    tokens: TokenTable
    metrics: MetricEngines
    #: The write side of run tracking (its run-state cache lives as long as the app).
    tracking: TrackingService
    protected_aliases: frozenset[str] = field(default_factory=frozenset)
    #: The promotion gates file (Settings.gates_file, resolved when the app started); None: no gates.
    gates_file: Path | None = None
    #: The highest SQL checkpoint seen so far (a read whose min_seq is at or below it does not wait).
    sql_position: int = 0
    metrics_position: int = 0
    cache: ResponseCache = field(default_factory=ResponseCache)
    #: Admission and threads of POST /query (built by the lifespan from the settings).
    query_gate: QueryGate | None = None
    _stamp: tuple[int, float] = (0, 0.0)

    def sql_stamp_if_fresh(self) -> int | None:
        """The SQL checkpoint when it was read within api_metrics_refresh_s (no I/O: safe on the event loop)."""
        position, at = self._stamp
        return position if at and time.monotonic() - at < self.settings.api_metrics_refresh_s else None

    def sql_stamp(self, *, fresh: bool) -> int:
        """The SQL checkpoint as a cache key: read at most every api_metrics_refresh_s unless fresh is asked."""
        position, at = self._stamp
        now = time.monotonic()
        if fresh or now - at >= self.settings.api_metrics_refresh_s:
            position = self.sql_checkpoint()
            self._stamp = (position, now)
        return position

    def sql_checkpoint(self) -> int:
        """The SQL projector's checkpoint, read now."""
        position = _sql_checkpoint(self.engine)
        self.sql_position = max(self.sql_position, position)
        return position

    def metrics_checkpoint(self) -> int:
        """The metric-table projector's checkpoint (the Delta application transaction), read now."""
        position = MetricTables(location_from_settings(self.settings)).snapshot().checkpoint
        self.metrics_position = max(self.metrics_position, position)
        return position

    async def wait_for_sql(self, min_seq: int | None) -> None:
        """Wait until the SQL read model has applied min_seq (no wait when None or already there)."""
        if min_seq is None or min_seq <= self.sql_position:
            return
        await self._wait(min_seq, self.sql_checkpoint, "the SQL read model")

    async def wait_for_metrics(self, min_seq: int | None) -> bool:
        """Wait until the metric tables have committed min_seq; True when the caller must reopen its engine."""
        if min_seq is None or min_seq <= self.metrics_position:
            return False
        await self._wait(min_seq, self.metrics_checkpoint, "the metric tables")
        return True

    async def _wait(self, min_seq: int, read: object, what: str) -> None:
        assert callable(read)
        deadline = time.monotonic() + self.settings.api_min_seq_wait_s
        checked_stream = False
        delay = 0.005
        while True:
            position = int(await asyncio.to_thread(read))
            if position >= min_seq:
                return
            if not checked_stream:
                last = await self.event_log.last_sequence()
                if min_seq > last:
                    raise ApiError(f"min_seq {min_seq} is beyond the event log's last sequence {last}: "
                                   "no write has reached it", details={"min_seq": min_seq, "last_seq": last})
                checked_stream = True
            if time.monotonic() + delay > deadline:
                raise ProjectionTimeout(
                    f"{what} has applied events up to sequence {position}, not yet {min_seq}, after "
                    f"{self.settings.api_min_seq_wait_s:g}s: is `mlhub projector` running? Retry later.",
                    details={"min_seq": min_seq, "position": position},
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)
