"""Metric definitions as schema: `configs/metrics.yaml`, its migrations under `migrations/metrics/`, the lock
`configs/metrics.lock.json`, and the services that turn them into metric.defined / metric.migrated events.

Imports events, eventlog and readmodel of mlhub. See docs/metrics.md.
"""

from mlhub.metricdefs.errors import DefinitionChanged, MetricDefinitionError, MigrationConflict
from mlhub.metricdefs.files import (
    SPEC_FIELDS,
    Migration,
    load_definitions,
    load_migration,
    load_migrations,
    read_lock,
    write_lock,
)
from mlhub.metricdefs.gate import SchemaFiles, check_schema, lock_new_metrics
from mlhub.metricdefs.history import differences, migrate_backward, migrate_forward
from mlhub.metricdefs.service import (
    METRIC_SUBJECTS,
    ApplyResult,
    LoggedMetric,
    apply_definitions,
    apply_migrations,
    logged_definitions,
    plan,
)

__all__ = [
    "METRIC_SUBJECTS",
    "SPEC_FIELDS",
    "ApplyResult",
    "DefinitionChanged",
    "LoggedMetric",
    "MetricDefinitionError",
    "Migration",
    "MigrationConflict",
    "SchemaFiles",
    "apply_definitions",
    "apply_migrations",
    "check_schema",
    "differences",
    "load_definitions",
    "load_migration",
    "load_migrations",
    "lock_new_metrics",
    "logged_definitions",
    "migrate_backward",
    "migrate_forward",
    "plan",
    "read_lock",
    "write_lock",
]
