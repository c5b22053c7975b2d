"""Errors of metric definitions, each with a stable code (see `mlhub.errors` for the rest of mlhub)."""

from __future__ import annotations

from mlhub.errors import InvalidInput, MlhubError


class MetricDefinitionError(InvalidInput):
    """A definitions file, lock or migration file that cannot be used; nothing was appended.

    The message names the file and, one problem a line, the field path and what is wrong with it, e.g.
    `configs/metrics.yaml: metrics.val_acc.direction: Input should be 'max' or 'min'`.
    """

    code = "INVALID_METRIC_DEFINITION"

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        #: The file the problems are in, as the user named it.
        self.source = source
        #: (field path, message) pairs; the path is "" for a problem of the whole file.
        self.problems = problems
        super().__init__("\n".join(f"{source}: {path}: {msg}" if path else f"{source}: {msg}"
                                   for path, msg in problems))


class DefinitionChanged(MlhubError):
    """configs/metrics.yaml changes a metric the event log already defines, and no migration covers the change.

    Nothing was appended. `changes` holds (metric, field, value in the log, value in the file).
    """

    code = "METRIC_DEFINITION_CHANGED"

    def __init__(self, message: str, changes: list[tuple[str, str, object, object]]) -> None:
        super().__init__(message)
        self.changes = changes


class MigrationConflict(MlhubError):
    """A metric migration cannot be applied to the definition the event log holds; nothing was appended."""

    code = "METRIC_MIGRATION_CONFLICT"
