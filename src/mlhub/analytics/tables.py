"""The metric tables as a whole: consistent snapshots for readers, compaction and vacuum.

Readers never list folders: they read the exact file list of one Delta snapshot, so a compaction committed while
they read (one Delta commit that removes the small files and adds the sorted one) is invisible to them, and the
files they hold are only deleted by ``vacuum`` after the retention window (7 days by default).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from mlhub.analytics.errors import MetricTableError
from mlhub.analytics.layout import (
    DEFAULT_APP_ID,
    PARTITION_COLUMN,
    POINTS_TABLE,
    RUNS_TABLE,
    SORT_KEYS,
    legacy_points_files,
    with_points_schema,
    writer_properties,
)
from mlhub.analytics.location import MetricsLocation, metrics_location
from mlhub.analytics.writer import open_table

log = logging.getLogger(__name__)

#: Default retention of files that a compaction replaced (readers of older snapshots may still read them).
DEFAULT_RETENTION_HOURS = 168


@dataclass(frozen=True)
class Snapshot:
    """The files of one version of each metric table and the writer's checkpoint.

    Files are absolute local paths for a local location, ``bucket/key`` paths of the location's Arrow file system
    for S3 (``MetricsLocation.file_path``)."""

    points_files: list[str]
    runs_files: list[str]
    points_version: int | None
    checkpoint: int
    #: Some points file is in an earlier layout (value statistics, no ``attempt``) until compaction rewrites it.
    legacy_points: bool = False


@dataclass
class CompactionResult:
    """What a compaction did: partitions rewritten, files removed and added, and rows rewritten."""

    partitions: list[int] = field(default_factory=list)
    files_removed: int = 0
    files_added: int = 0
    rows: int = 0
    #: Buckets whose commit lost a race with a concurrent append (left as they were; compacted next time).
    skipped: list[int] = field(default_factory=list)


class MetricTables:
    """Read-side access and maintenance of the metric tables of one location (constructor: no I/O)."""

    def __init__(self, location: MetricsLocation | Path | str, *, app_id: str = DEFAULT_APP_ID) -> None:
        self.location = metrics_location(location)
        self.app_id = app_id

    def change_stamp(self) -> object:
        """A value that changes with every commit of the points table (None while there is none): the mtime of
        the local ``_delta_log`` folder (one stat), or the table's latest version on S3 (one listing)."""
        if self.location.is_local:
            try:
                return os.stat(self.location.local_dir / POINTS_TABLE / "_delta_log").st_mtime_ns
            except OSError:
                return None
        points = open_table(self.location, POINTS_TABLE)
        return None if points is None else points.version()

    def snapshot(self) -> Snapshot:
        """The current version's files of both tables (empty lists where a table does not exist yet)."""
        points = open_table(self.location, POINTS_TABLE)
        runs = open_table(self.location, RUNS_TABLE)
        try:
            return Snapshot(
                points_files=[self.location.file_path(u) for u in points.file_uris()] if points is not None else [],
                runs_files=[self.location.file_path(u) for u in runs.file_uris()] if runs is not None else [],
                points_version=points.version() if points is not None else None,
                checkpoint=int((points.transaction_version(self.app_id) or 0) if points is not None else 0),
                legacy_points=points is not None and any(
                    legacy_points_files(pa.table(points.get_add_actions(flatten=True)))),
            )
        except (DeltaError, OSError) as e:
            raise MetricTableError(f"cannot read the metric tables at {self.location}: {e}") from e

    def partition_files(self, bucket: int) -> list[str]:
        """The current files of one bucket of the points table."""
        points = open_table(self.location, POINTS_TABLE)
        if points is None:
            return []
        uris = points.file_uris(file_pruning_predicate=[(PARTITION_COLUMN, "=", str(bucket))])
        return [self.location.file_path(u) for u in uris]

    def compact(self, *, min_files: int = 2, max_rows: int = 50_000_000) -> CompactionResult:
        """Rewrite every bucket holding at least min_files files as one file sorted by (run_id, key, step), and
        every bucket with a file in an earlier layout (value statistics, no ``attempt`` column) however many.

        Each bucket is replaced by one Delta commit (an overwrite with the predicate ``bucket = b``): a reader
        sees the old files or the new one, never a mix, and the content is the same rows. The writer's
        application transaction is untouched. A bucket above max_rows rows falls back to Delta's own
        ``optimize.compact`` (bin-packing without sorting) to bound memory. A concurrent append to the same
        bucket makes that bucket's commit fail; it is skipped (logged) and compacted next time.
        """
        result = CompactionResult()
        points = open_table(self.location, POINTS_TABLE)
        if points is None:
            return result
        try:
            counts = _files_per_bucket(points)
            for bucket, (files, rows, legacy) in sorted(counts.items()):
                if files < min_files and not legacy:
                    continue
                if rows > max_rows:
                    metrics = points.optimize.compact(partition_filters=[(PARTITION_COLUMN, "=", str(bucket))],
                                                      writer_properties=writer_properties())
                    result.files_removed += int(metrics.get("numFilesRemoved", 0))
                    result.files_added += int(metrics.get("numFilesAdded", 0))
                else:
                    try:
                        self._rewrite_sorted(points, bucket)
                    except CommitFailedError as e:
                        log.info("metric tables: bucket %d changed during compaction, skipped: %s", bucket, e)
                        result.skipped.append(bucket)
                        points.update_incremental()
                        continue
                    result.files_removed += files
                    result.files_added += 1
                result.partitions.append(bucket)
                result.rows += rows
                points.update_incremental()
            runs = open_table(self.location, RUNS_TABLE)
            if runs is not None and len(runs.file_uris()) >= min_files:
                runs.optimize.compact()
        except (DeltaError, OSError) as e:
            raise MetricTableError(f"compacting the metric tables at {self.location} failed: {e}") from e
        return result

    def _rewrite_sorted(self, points: DeltaTable, bucket: int) -> None:
        """Replace one bucket's files by one sorted file in one commit (CommitFailedError on a concurrent append)."""
        predicate = f"{PARTITION_COLUMN} = {bucket}"
        table = points.to_pyarrow_table(filters=[(PARTITION_COLUMN, "=", bucket)])
        table = with_points_schema(table).sort_by(SORT_KEYS)
        write_deltalake(
            points,
            table,
            mode="overwrite",
            predicate=predicate,
            schema_mode="merge",  # a table not appended to since POINTS_SCHEMA gained a column gains it here
            partition_by=[PARTITION_COLUMN],
            writer_properties=writer_properties(),
        )
        log.info("metric tables: compacted bucket %d (%d rows)", bucket, table.num_rows)

    def vacuum(self, *, retention_hours: int = DEFAULT_RETENTION_HOURS) -> list[str]:
        """Delete files no snapshot younger than retention_hours uses; return their paths."""
        deleted: list[str] = []
        for name in (POINTS_TABLE, RUNS_TABLE):
            table = open_table(self.location, name)
            if table is None:
                continue
            try:
                deleted += table.vacuum(retention_hours=retention_hours, dry_run=False)
            except (DeltaError, OSError) as e:
                raise MetricTableError(f"vacuum of {self.location.table_uri(name)} failed: {e}") from e
        return deleted

    def count_points(self) -> int:
        """Number of points in the current version (from the Delta log's statistics)."""
        points = open_table(self.location, POINTS_TABLE)
        return 0 if points is None else sum(rows for _, rows, _ in _files_per_bucket(points).values())


def _files_per_bucket(points: DeltaTable) -> dict[int, tuple[int, int, bool]]:
    """bucket -> (number of files, number of rows, whether a file is in an earlier layout), from the add actions
    of the current version."""
    actions = pa.table(points.get_add_actions(flatten=True))
    buckets = actions.column(f"partition.{PARTITION_COLUMN}").to_pylist()
    rows = actions.column("num_records").to_pylist()
    result: dict[int, tuple[int, int, bool]] = {}
    for bucket, n, legacy in zip(buckets, rows, legacy_points_files(actions), strict=True):
        files, total, old = result.get(int(bucket), (0, 0, False))
        result[int(bucket)] = (files + 1, total + int(n or 0), old or legacy)
    return result

