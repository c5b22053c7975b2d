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
