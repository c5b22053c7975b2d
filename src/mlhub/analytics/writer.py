"""The metric table writer: projects MetricsLogged events into the points Delta table, exactly once.

Exactly-once across crashes: every flush is one Delta commit of the points table carrying the application
transaction ``(app_id, version=<last applied stream sequence>)``. On start the writer reads that version back
(``DeltaTable.transaction_version(app_id)``) as its checkpoint and ignores any event at or below it, so replaying
from ``checkpoint() + 1`` after a crash neither loses nor duplicates a point. Points buffered but not yet flushed
are simply re-read from the log.

The run -> experiment map (``run.created`` events) is persisted in the small ``runs`` side table. It is committed
*before* the points commit of the same flush and is idempotent by run_id, so a crash between the two commits
leaves a runs row that the re-applied events find already present; a run created at or below the points
checkpoint is therefore always in the side table.
"""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from mlhub.analytics.errors import MetricTableError
from mlhub.analytics.layout import (
    DEFAULT_APP_ID,
    NUM_BUCKETS,
    PARTITION_COLUMN,
    POINTS_SCHEMA,
    POINTS_TABLE,
    RUNS_SCHEMA,
    RUNS_TABLE,
    run_bucket,
    writer_properties,
)
from mlhub.analytics.location import MetricsLocation, metrics_location
from mlhub.events import Envelope, MetricSeries, MetricsLogged, RunCreated

log = logging.getLogger(__name__)


class IncomingLike(Protocol):
    """What the writer needs of one message of a runtime batch (mlhub.projections.runtime.Incoming)."""

    @property
    def seq(self) -> int: ...
    @property
    def envelope(self) -> Envelope | None: ...
    @property
    def error(self) -> str | None: ...
    def dead_letter(self, error: str) -> Any:
        """This message as the runtime's dead letter."""


class BatchLike(Protocol):
    """What the writer needs of a runtime batch (mlhub.projections.runtime.Batch, which analytics cannot import)."""

    @property
    def events(self) -> Sequence[IncomingLike]: ...
    @property
    def last_seq(self) -> int: ...


class _PendingSeries(NamedTuple):
    """One buffered series with where it belongs; the points stay in the event's own tuples until the flush."""

    bucket: int
    run_id: str
    key: str
    first_step: int
    seq: int
    attempt: int | None
    series: MetricSeries


def open_table(location: MetricsLocation, name: str) -> DeltaTable | None:
    """The Delta table `name` of the location, or None when none was created there yet."""
    path = location.table_uri(name)
    try:
        return DeltaTable(path, storage_options=location.storage_options or None)
    except TableNotFoundError:
        return None
    except (DeltaError, OSError) as e:
        raise MetricTableError(f"cannot open the Delta table at {path}: {e}") from e


class MetricTableWriter:
    """Projector of metric points into Delta Lake (``<location>/points``), batching many events per commit.

    Usage by a projector runtime: ``checkpoint()`` says where to resume (replay from checkpoint + 1);
    ``apply(records)`` takes ``(stream sequence, envelope)`` pairs in stream order (every event type: those
    it does not need are skipped) and flushes by itself once ``flush_points`` points are buffered or
    ``flush_interval_s`` has passed since the last flush; call ``flush()`` when the stream is idle and before
    shutdown. Constructing it does no I/O.
    """

    #: Name of this projection (the runtime's key for its lock, logs and dead letters).
    name = "metrics"
    #: The only event types it reads; the runtime passes no others (they only move the position).
    event_types: frozenset[str] | None = frozenset({RunCreated.event_type, MetricsLogged.event_type})

    def __init__(
        self,
        location: MetricsLocation | Path | str,
        *,
        app_id: str = DEFAULT_APP_ID,
        flush_points: int = 200_000,
        flush_interval_s: float = 5.0,
        advance_every: int = 10_000,
        num_buckets: int = NUM_BUCKETS,
    ) -> None:
        self.location = metrics_location(location)
        self.app_id = app_id
        self.flush_points = flush_points
        self.flush_interval_s = flush_interval_s
        #: Commit an empty transaction (only to move the checkpoint) after this many events without points.
        self.advance_every = advance_every
        self.num_buckets = num_buckets
        self._loaded = False
        self._points: DeltaTable | None = None
        self._runs: DeltaTable | None = None
        self._checkpoint = 0
        self._last_seq = 0
        self._experiments: dict[str, str] = {}
        self._buckets: dict[str, int] = {}
        self._new_runs: list[tuple[str, str, int]] = []
        self._pending: list[_PendingSeries] = []
        self._pending_points = 0
        self._last_flush = time.monotonic()

    # -- state ----------------------------------------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        self._points = open_table(self.location, POINTS_TABLE)
        self._runs = open_table(self.location, RUNS_TABLE)
        version = self._points.transaction_version(self.app_id) if self._points is not None else None
        self._checkpoint = self._last_seq = int(version or 0)
        if self._runs is not None:
            table = self._runs.to_pyarrow_table(columns=["run_id", "experiment_id"])
            self._experiments = dict(
                zip(table.column("run_id").to_pylist(), table.column("experiment_id").to_pylist(), strict=True)
            )
        self._loaded = True

    def checkpoint(self) -> int:
        """The last stream sequence whose points are durably committed (0: none yet). Replay from the next one."""
        self._load()
        return self._checkpoint

    @property
    def last_applied(self) -> int:
        """The last stream sequence applied (buffered or committed)."""
        return self._last_seq

    @property
    def pending_points(self) -> int:
        """How many points are buffered and not yet committed."""
        return self._pending_points

    def experiment_of(self, run_id: str) -> str | None:
        """The experiment of a run seen by this writer (None: no run.created event seen for it)."""
        self._load()
        return self._experiments.get(run_id)

    # -- applying -------------------------------------------------------------------------------------------

    def apply(self, batch: BatchLike) -> list[Any]:
        """The projector runtime's entry point: buffer a batch (see mlhub.projections.runtime.Projector).

        Undecodable messages come back as dead letters; every message moves the position to batch.last_seq.
        Nothing becomes visible before the next flush, which commits the points and the checkpoint together.
        """
        self._load()
        records: list[tuple[int, Envelope]] = []
        dead: list[Any] = []
        for incoming in batch.events:
            if incoming.envelope is None:
                if incoming.seq > self._last_seq:
                    dead.append(incoming.dead_letter(incoming.error or "undecodable message"))
            else:
                records.append((incoming.seq, incoming.envelope))
        self.apply_records(records, last_seq=batch.last_seq)
        return dead

    def apply_records(self, records: Sequence[tuple[int, Envelope]], *, last_seq: int | None = None) -> None:
        """Buffer the points of (stream sequence, envelope) pairs in stream order; seqs already applied are no-ops.

        last_seq (>= every record's seq) moves the position past messages that were filtered out upstream.
        """
        self._load()
        for seq, envelope in records:
            if seq <= self._last_seq:
                continue  # already applied (a replay from an older position, or the same batch twice)
            self._last_seq = seq
            event = envelope.event
            if isinstance(event, MetricsLogged):
                self._buffer(seq, event)
            elif isinstance(event, RunCreated) and event.run_id not in self._experiments:
                self._experiments[event.run_id] = event.experiment_id
                self._new_runs.append((event.run_id, event.experiment_id, seq))
        if last_seq is not None and last_seq > self._last_seq:
            self._last_seq = last_seq
        self._maybe_flush()

    def _buffer(self, seq: int, event: MetricsLogged) -> None:
        run_id = event.run_id
        bucket = self._buckets.get(run_id)
        if bucket is None:
            bucket = self._buckets[run_id] = run_bucket(run_id, self.num_buckets)
        for s in event.series:
            self._pending.append(_PendingSeries(bucket, run_id, s.key, s.steps[0], seq, event.attempt, s))
            self._pending_points += len(s.values)

    def _maybe_flush(self) -> None:
        if self._pending_points >= self.flush_points:
            self.flush()
        elif (self._pending or self._new_runs) and time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()
        elif not self._pending and self._last_seq - self._checkpoint >= self.advance_every:
            self.flush()

    # -- committing -----------------------------------------------------------------------------------------

    def flush(self) -> int:
        """Commit everything buffered (runs first, then points with the new checkpoint); return the checkpoint."""
        self._load()
        if self._last_seq <= self._checkpoint:
            return self._checkpoint
        version = self._last_seq
        try:
            if self._new_runs:
                self._commit_runs(version)
            self._commit_points_retrying(version)
        except (DeltaError, OSError) as e:
            raise MetricTableError(
                f"committing metric points up to stream sequence {version} to {self.location} failed: {e}"
            ) from e
        log.debug("metric tables: committed %d points up to seq %d", self._pending_points, version)
        self._checkpoint = version
        self._pending.clear()
        self._pending_points = 0
        self._new_runs.clear()
        self._last_flush = time.monotonic()
        return version

    def _commit_runs(self, version: int) -> None:
        run_ids, experiment_ids, seqs = zip(*self._new_runs, strict=True)
        table = pa.table([pa.array(run_ids), pa.array(experiment_ids), pa.array(seqs, pa.int64())], schema=RUNS_SCHEMA)
        props = CommitProperties(app_transactions=[Transaction(self.app_id, version)])
        if self._runs is not None:
            write_deltalake(self._runs, table, mode="append", commit_properties=props)
        else:
            write_deltalake(self.location.table_uri(RUNS_TABLE), table, mode="append", commit_properties=props,
                            storage_options=self.location.storage_options or None)
            self._runs = open_table(self.location, RUNS_TABLE)

    def _commit_points_retrying(self, version: int, attempts: int = 5) -> None:
        """Commit the points; a commit that lost a race with a compaction (which rewrote a bucket this append
        does not read) is retried on the refreshed table: nothing was committed, so a retry cannot double."""
        for attempt in range(attempts):
            if self._points is not None:
                self._points.update_incremental()  # commit on top of the newest version (e.g. after a compaction)
            try:
                self._commit_points(version)
                return
            except CommitFailedError as e:
                if attempt == attempts - 1:
                    raise
                log.info("metric tables: commit up to seq %d raced a concurrent commit, retrying: %s", version, e)
                time.sleep(0.05 * (attempt + 1))

    def _commit_points(self, version: int) -> None:
        table = build_points_table(self._pending, self._experiments)
        props = CommitProperties(
            app_transactions=[Transaction(self.app_id, version)],
            custom_metadata={"mlhub.points": str(table.num_rows)},
        )
        first = self._points is None
        write_deltalake(
            self._points if self._points is not None else self.location.table_uri(POINTS_TABLE),
            table,
            mode="append",
            # A table written before a column was added to POINTS_SCHEMA (attempt) gains it with this append.
            schema_mode="merge",
            partition_by=[PARTITION_COLUMN],
            writer_properties=writer_properties(),
            commit_properties=props,
            storage_options=(self.location.storage_options or None) if first else None,
        )
        if first:
            self._points = open_table(self.location, POINTS_TABLE)

    def close(self) -> None:
        """Flush what is buffered."""
        if self._loaded:
            self.flush()


def build_points_table(pending: list[_PendingSeries], experiments: dict[str, str]) -> pa.Table:
    """The Arrow table of buffered series, column by column, sorted by (bucket, run_id, key, first step, seq).

    Numbers are copied from each series' tuples into typed buffers at C speed (``array.extend``) and handed to
    Arrow without a copy; string columns are run-end encoded per series and decoded by Arrow. Sorting happens per
    series (not per point): within a series the producer's order is kept, which is step order for every normal
    logger; compaction sorts files exactly.
    """
    pending.sort(key=lambda p: (p.bucket, p.run_id, p.key, p.first_step, p.seq))
    values, steps, epochs, stamps = array("d"), array("q"), array("q"), array("q")
    run_ends = array("i")
    for p in pending:
        s = p.series
        values.extend(s.values)
        steps.extend(s.steps)
        epochs.extend(s.epochs)
        stamps.extend(s.timestamps)
        run_ends.append(len(values))
    ends = _buffer_array(pa.int32(), run_ends)
    columns = [
        _per_series(ends, [p.bucket for p in pending], pa.int32()),
        _per_series(ends, [p.run_id for p in pending], pa.string()),
        _per_series(ends, [experiments.get(p.run_id) for p in pending], pa.string()),
        _per_series(ends, [p.key for p in pending], pa.string()),
        _buffer_array(pa.int64(), steps),
        _buffer_array(pa.int64(), epochs),
        _buffer_array(pa.float64(), values),
        _buffer_array(pa.int64(), stamps),
        _per_series(ends, [p.seq for p in pending], pa.int64()),
        _per_series(ends, [p.attempt for p in pending], pa.int64()),
    ]
    return pa.table(columns, schema=POINTS_SCHEMA)


def _buffer_array(type_: pa.DataType, data: array[Any]) -> pa.Array:
    """A null-free Arrow array over a stdlib array's buffer (no copy)."""
    return pa.Array.from_buffers(type_, len(data), [None, pa.py_buffer(data)])


def _per_series(run_ends: pa.Array, per_series: list[Any], type_: pa.DataType) -> pa.Array:
    """A column in which series i's value repeats up to run_ends[i], built without per-point objects."""
    if not per_series:
        return pa.array([], type_)
    encoded = pa.RunEndEncodedArray.from_arrays(run_ends, pa.array(per_series, type_))
    return pc.run_end_decode(encoded)
