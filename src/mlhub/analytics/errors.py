"""Errors of the analytics package (each an MlhubError with its own code)."""

from __future__ import annotations

from mlhub.errors import InvalidInput, MlhubError


class MetricTableError(MlhubError):
    """The metric tables (Delta Lake) could not be read or written."""

    code = "METRIC_TABLE_ERROR"


class QueryRefused(InvalidInput):
    """A query was refused because it is not a read-only SELECT over mlhub's views (the message says why)."""

    code = "QUERY_REFUSED"


class QueryFailed(InvalidInput):
    """DuckDB could not run a query (a syntax error, an unknown column, ...)."""

    code = "QUERY_FAILED"


class QueryOutOfMemory(InvalidInput):
    """A query needed more memory than its engine's memory_limit (the API's MLHUB_API_QUERY_MEMORY_MB)."""

    code = "QUERY_OUT_OF_MEMORY"

    def __init__(self, limit_mb: int | None) -> None:
        where = f"the {limit_mb} MiB" if limit_mb else "the"
        super().__init__(f"the query needs more than {where} memory a query may use (MLHUB_API_QUERY_MEMORY_MB; "
                         "nothing spills to disk): aggregate or filter more, e.g. on run_id")
        self.details = {"limit": "MLHUB_API_QUERY_MEMORY_MB", "max_mb": limit_mb}
