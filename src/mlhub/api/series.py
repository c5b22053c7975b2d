"""Metric series for charts (downsampled in DuckDB, keeping every bucket's first, last, minimum and maximum) and
the read-only /query with row and time limits."""

from __future__ import annotations

import threading
import time
from typing import Any

import duckdb

from mlhub.analytics import QueryEngine, QueryFailed, QueryRefused, check_read_only, run_bucket
from mlhub.api.errors import ApiError
from mlhub.api.queries import jv

_BASE = "FROM mlhub.points WHERE bucket = $bucket AND run_id = $run_id AND key = $key"
_STATS = f"SELECT count(*), min(step), max(step) {_BASE}"
_ALL = f"SELECT step, epoch, value, timestamp {_BASE} ORDER BY step, timestamp, seq"
#: Buckets of equal step width; per bucket the first and last point (by step) and the points of the minimum and
#: maximum value (NaN left out) survive, so spikes and the ends of the curve are never lost.
_DOWNSAMPLED = f"""
WITH p AS (
    SELECT step, epoch, value, timestamp, seq,
           CAST(floor((step - $lo) * $buckets / ($hi - $lo + 1)) AS BIGINT) AS b
    {_BASE}
), agg AS (
    SELECT
        arg_min({{'s': step, 'e': epoch, 'v': value, 't': timestamp, 'q': seq}}, (step, timestamp, seq)) AS f,
        arg_max({{'s': step, 'e': epoch, 'v': value, 't': timestamp, 'q': seq}}, (step, timestamp, seq)) AS l,
        arg_min({{'s': step, 'e': epoch, 'v': value, 't': timestamp, 'q': seq}}, value)
            FILTER (WHERE NOT isnan(value)) AS mn,
        arg_max({{'s': step, 'e': epoch, 'v': value, 't': timestamp, 'q': seq}}, value)
            FILTER (WHERE NOT isnan(value)) AS mx
    FROM p GROUP BY b
), picked AS (
    SELECT f AS x FROM agg UNION SELECT l FROM agg
    UNION SELECT mn FROM agg WHERE mn IS NOT NULL UNION SELECT mx FROM agg WHERE mx IS NOT NULL
)
SELECT x.s, x.e, x.v, x.t FROM picked ORDER BY x.s, x.t, x.q
"""


def _in_range(sql: str) -> str:
    return sql.replace("AND key = $key", "AND key = $key AND step BETWEEN $min_step AND $max_step")


def read_series(engine: QueryEngine, run_id: str, key: str, max_points: int, *, min_step: int | None = None,
                max_step: int | None = None) -> dict[str, Any]:
    """A run's series of one key in step order; at most max_points points (min/max-preserving downsampling).

    With min_step or max_step only the points whose step lies in that closed range are read (a chart's zoom)."""
    ranged = min_step is not None or max_step is not None
    cursor = engine.cursor()
    try:
        params: dict[str, Any] = {"bucket": run_bucket(run_id, engine.num_buckets), "run_id": run_id, "key": key}
        if ranged:
            params.update(min_step=min_step or 0, max_step=2**62 if max_step is None else max_step)
        pick = _in_range if ranged else (lambda sql: sql)
        stats = cursor.execute(pick(_STATS), params).fetchone()
        total, lo, hi = (int(stats[0]), stats[1], stats[2]) if stats else (0, None, None)
        if total <= max_points:
            rows = cursor.execute(pick(_ALL), params).fetchall() if total else []
        else:
            buckets = max(1, max_points // 4)
            rows = cursor.execute(pick(_DOWNSAMPLED),
                                  {**params, "lo": lo, "hi": hi, "buckets": buckets}).fetchall()
    except duckdb.Error as e:
        raise QueryFailed(f"reading the series {key!r} of run {run_id!r} failed: {e}") from e
    finally:
        cursor.close()
    return {
        "run_id": run_id, "key": key, "total_points": total, "returned_points": len(rows),
        "downsampled": total > len(rows),
        "steps": [r[0] for r in rows], "epochs": [r[1] for r in rows],
        "values": [jv(r[2]) for r in rows], "timestamps": [r[3] for r in rows],
    }


class QueryTimeout(ApiError):
    """A /query ran past its time limit and was interrupted."""

    code = "QUERY_TIMEOUT"


def run_query(engine: QueryEngine, sql: str, max_rows: int, timeout_s: float) -> dict[str, Any]:
    """One read-only SELECT with at most max_rows rows returned, interrupted after timeout_s."""
    check_read_only(sql)
    cursor = engine.cursor()
    timer = threading.Timer(timeout_s, cursor.interrupt)
    started = time.perf_counter()
    timer.start()
    try:
        relation = cursor.sql(sql)
        if relation is None:
            raise QueryRefused("the statement returns no rows: give one SELECT")
        columns = list(relation.columns)
        rows = relation.limit(max_rows + 1).fetchall()
    except duckdb.InterruptException as e:
        raise QueryTimeout(f"the query ran longer than {timeout_s:g}s and was stopped; narrow it down "
                           "(filter on run_id, or use run_metrics(run_id, key))",
                           details={"timeout_s": timeout_s}) from e
    except duckdb.PermissionException as e:
        raise QueryRefused(f"the query tried to reach outside mlhub's views: {_first_line(e)}") from e
    except duckdb.Error as e:
        raise QueryFailed(_first_line(e)) from e
    finally:
        timer.cancel()
        cursor.close()
    elapsed_ms = (time.perf_counter() - started) * 1000
    truncated = len(rows) > max_rows
    rows = rows[:max_rows]
    return {"columns": columns, "rows": [[_cell(v) for v in row] for row in rows], "row_count": len(rows),
            "truncated": truncated, "elapsed_ms": round(elapsed_ms, 3)}


def _cell(value: Any) -> Any:
    from datetime import date, datetime, timedelta
    from datetime import time as dtime
    from decimal import Decimal
    from uuid import UUID

    if isinstance(value, float | datetime):
        return jv(value)
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
        return [_cell(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _cell(v) for k, v in value.items()}
    return value


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
