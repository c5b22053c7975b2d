"""Metric series for charts (downsampled in DuckDB, keeping every bucket's first, last, minimum and maximum)."""

from __future__ import annotations

from typing import Any

import duckdb

from mlhub.analytics import QueryEngine, QueryFailed, run_bucket
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
