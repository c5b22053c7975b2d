"""Where the metric tables live and what they hold: Arrow schemas, the run bucket function, writer settings.

Two Delta Lake tables sit under the metrics location (a folder or an S3 prefix, see ``location``):

- ``points/``: one row per metric point (run_id, experiment_id, key, step, epoch, value, timestamp, seq, attempt),
  partitioned by ``bucket`` = a stable hash of run_id modulo ``NUM_BUCKETS`` and sorted by (run_id, key, step)
  within each file, so one run's history lives in one partition and a few row groups. Every attempt's points
  are kept (``attempt``); readers of a run's results count its last attempt's (the ``current_metrics`` view).
  ``attempt`` was added to the layout later: a table written before has data files without it, and the first
  append after the upgrade adds the column to the table's schema (delta-rs schema merge); those older rows
  read as NULL (points stored before events said their attempt).
- ``runs/``: one row per run the writer has seen created (run_id -> experiment_id), so a restarted writer knows
  the experiment of a run whose ``run.created`` event lies before its checkpoint.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
from deltalake import ColumnProperties, WriterProperties

#: Number of hash buckets (partitions) of the points table. Changing it needs a rebuild (``mlhub replay``).
NUM_BUCKETS = 64
#: Application id under which the writer records its last applied stream sequence in each Delta commit.
DEFAULT_APP_ID = "mlhub.metric-tables"

POINTS_SCHEMA = pa.schema(
    [
        pa.field("bucket", pa.int32(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("experiment_id", pa.string(), nullable=True),
        pa.field("key", pa.string(), nullable=False),
        pa.field("step", pa.int64(), nullable=False),
        pa.field("epoch", pa.int64(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        #: milliseconds since the Unix epoch, as in the MetricsLogged event
        pa.field("timestamp", pa.int64(), nullable=False),
        #: stream sequence of the MetricsLogged event that carried the point (provenance, and a tie-breaker)
        pa.field("seq", pa.int64(), nullable=False),
        #: the run attempt that logged the point (MetricsLogged.attempt); NULL for points stored before events
        #: said it (schema v2) and in data files written before this column existed
        pa.field("attempt", pa.int64(), nullable=True),
    ]
)
RUNS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("experiment_id", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
    ]
)
PARTITION_COLUMN = "bucket"
#: The order of rows inside each data file (and of files' row groups' statistics).
SORT_KEYS = [("run_id", "ascending"), ("key", "ascending"), ("step", "ascending"), ("seq", "ascending")]


def with_points_schema(table: pa.Table) -> pa.Table:
    """Rows of the points table in POINTS_SCHEMA: columns in its order, one it lacks (``attempt`` of data written
    before the column existed) added as NULLs."""
    for f in POINTS_SCHEMA:
        if f.name not in table.column_names:
            table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    return table.select(POINTS_SCHEMA.names).cast(POINTS_SCHEMA)


def run_bucket(run_id: str, num_buckets: int = NUM_BUCKETS) -> int:
    """The partition of a run: the first 32 bits of md5(run_id) modulo num_buckets.

    md5 (not Python's salted hash, not crc32) because DuckDB computes the same value in SQL:
    ``('0x' || md5(run_id)[1:8])::UBIGINT % 64`` (the ``metric_bucket`` macro), so queries can prune partitions.
    """
    return int(hashlib.md5(run_id.encode(), usedforsecurity=False).hexdigest()[:8], 16) % num_buckets


#: Name (folder under the metrics location) of the points Delta table.
POINTS_TABLE = "points"
#: Name of the runs side table (run_id -> experiment_id).
RUNS_TABLE = "runs"


def writer_properties() -> WriterProperties:
    """Parquet settings: snappy pages, row groups small enough that row-group statistics prune well.

    ``value`` is written without statistics: Parquet's min/max leave NaN out (as the format says), and a reader
    that trusts them (DuckDB's zone maps and statistics propagation) then proves ``isnan(value)`` false for a
    row group that holds NaN points: `count(*) ... WHERE isnan(value)` would answer 0. Nothing prunes on value;
    run_id, key, step and seq keep their statistics.
    """
    return WriterProperties(compression="SNAPPY", max_row_group_size=128 * 1024,
                            column_properties={"value": ColumnProperties(statistics_enabled="NONE")})


def legacy_points_files(add_actions: pa.Table) -> list[bool]:
    """Per data file (a Delta snapshot's flattened add actions): True when it was written in an earlier layout,
    with statistics on ``value`` or without the ``attempt`` column. Compaction rewrites such files; readers
    of a snapshot that still has one read with the older, slower settings (see QueryEngine)."""
    names = add_actions.column_names
    n = add_actions.num_rows
    with_value_stats = (add_actions.column("min.value").to_pylist() if "min.value" in names else [None] * n)
    attempt_stats = (add_actions.column("null_count.attempt").to_pylist() if "null_count.attempt" in names
                     else [None] * n)
    return [v is not None or a is None for v, a in zip(with_value_stats, attempt_stats, strict=True)]
