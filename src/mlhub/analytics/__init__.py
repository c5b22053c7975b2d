"""Metric tables (Parquet via Delta Lake) and DuckDB queries; SQL views come from top-level projections/*.sql.

- `MetricTableWriter`: the projector that writes metric points exactly once (Delta app transactions).
- `MetricTables`: snapshots for readers, sorted compaction and vacuum.
- `MetricsLocation`: where the tables live (a local folder or an S3 prefix, MLHUB_METRICS_URI).
- `QueryEngine`: read-only DuckDB SQL over the metric tables and the read model's tables (passed as Arrow).
"""

from mlhub.analytics.engine import READMODEL_TABLES, QueryEngine, default_views_dir, parquet_select
from mlhub.analytics.errors import MetricTableError, QueryFailed, QueryOutOfMemory, QueryRefused
from mlhub.analytics.guard import check_read_only
from mlhub.analytics.layout import DEFAULT_APP_ID, NUM_BUCKETS, POINTS_SCHEMA, RUNS_SCHEMA, run_bucket
from mlhub.analytics.location import MetricsLocation, location_from_settings, metrics_location
from mlhub.analytics.tables import CompactionResult, MetricTables, Snapshot
from mlhub.analytics.writer import MetricTableWriter, build_points_table

__all__ = [
    "DEFAULT_APP_ID",
    "NUM_BUCKETS",
    "POINTS_SCHEMA",
    "READMODEL_TABLES",
    "RUNS_SCHEMA",
    "CompactionResult",
    "MetricTableError",
    "MetricTableWriter",
    "MetricTables",
    "MetricsLocation",
    "QueryEngine",
    "QueryFailed",
    "QueryOutOfMemory",
    "QueryRefused",
    "Snapshot",
    "build_points_table",
    "check_read_only",
    "default_views_dir",
    "location_from_settings",
    "metrics_location",
    "parquet_select",
    "run_bucket",
]
