"""One JSON form of a query result's cells, for every reader of query results (the API's `POST /query`, the
CLI's `mlhub query --format json` in both modes), so the two modes print the same values."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any
from uuid import UUID


def json_cell(value: Any) -> Any:
    """A DuckDB result value as JSON: non-finite floats as "NaN"/"Infinity"/"-Infinity" (as the event log writes
    them), timestamps as ISO-8601 UTC (a naive one is UTC), dates and times as ISO text, decimals as floats,
    intervals as seconds, blobs as hex, UUIDs as text, lists and structs cell by cell; anything else as text."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date | dtime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_cell(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_cell(v) for k, v in value.items()}
    return str(value)
