"""The read-only `POST /query`, bounded: rows, bytes, time, memory, and how many run at once.

- Rows and bytes: the result is streamed from DuckDB a few rows at a time and serialized row by row in a query
  thread, never on the event loop; it stops at max_rows or when the next row would take the answer past
  MLHUB_API_QUERY_MAX_BYTES, and the answer says which (`truncated_by`, `limit`).
- Time: DuckDB is interrupted after MLHUB_API_QUERY_TIMEOUT_S of running (422 QUERY_TIMEOUT).
- Memory and CPU: each engine has DuckDB's memory_limit (MLHUB_API_QUERY_MEMORY_MB, no spilling) and threads
  (MLHUB_API_QUERY_THREADS), set in mlhub.analytics.QueryEngine.
- Concurrency: QueryGate admits at most MLHUB_API_QUERY_MAX_CONCURRENT queries per API process (one more is 429
  TOO_MANY_QUERIES with Retry-After) and runs MLHUB_API_QUERY_WORKERS of them at once on its own threads, so
  queries never take the threads other endpoints use.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import duckdb

from mlhub.analytics import QueryEngine, QueryRefused, check_read_only
from mlhub.analytics.cells import json_cell
from mlhub.api.errors import ApiError
from mlhub.settings import Settings

#: Most rows fetched from DuckDB's streaming result at a time; fewer when rows are wide (see _bounded_rows).
BATCH_ROWS = 1024
#: Seconds a client refused with 429 is told to wait (queries end within MLHUB_API_QUERY_TIMEOUT_S).
RETRY_AFTER_S = 1


class QueryTimeout(ApiError):
    """A /query ran past its time limit and was interrupted."""

    code = "QUERY_TIMEOUT"


class TooManyQueries(ApiError):
    """This API process already takes MLHUB_API_QUERY_MAX_CONCURRENT queries (429, with Retry-After)."""

    code = "TOO_MANY_QUERIES"


class QueryGate:
    """Admission (a count, touched on the event loop only) and the query threads of one API process."""

    def __init__(self, settings: Settings) -> None:
        self.max_concurrent = settings.api_query_max_concurrent
        self.workers = settings.api_query_workers
        self.active = 0
        self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="mlhub-query")

    def enter(self) -> None:
        """Admit one query, or TooManyQueries naming the limit."""
        if self.active >= self.max_concurrent:
            raise TooManyQueries(
                f"this API process already runs or queues {self.active} queries "
                f"(MLHUB_API_QUERY_MAX_CONCURRENT={self.max_concurrent}); retry in {RETRY_AFTER_S}s",
                details={"limit": "MLHUB_API_QUERY_MAX_CONCURRENT", "max": self.max_concurrent},
                headers={"Retry-After": str(RETRY_AFTER_S)})
        self.active += 1

    def leave(self) -> None:
        """A query admitted by enter() has answered."""
        self.active -= 1

    def close(self) -> None:
        """Stop the query threads (queued queries are dropped; running ones end by their timeout)."""
        self.executor.shutdown(wait=False, cancel_futures=True)


def run_query(engine: QueryEngine, sql: str, *, max_rows: int, max_bytes: int, timeout_s: float) -> bytes:
    """One read-only SELECT as the JSON answer of /query (bytes): at most max_rows rows and max_bytes bytes,
    interrupted after timeout_s."""
    check_read_only(sql, engine.relations)
    cursor = engine.cursor()
    timer = threading.Timer(timeout_s, cursor.interrupt)
    started = time.perf_counter()
    timer.start()
    try:
        cursor.execute(sql)  # a streaming result: rows are produced as they are fetched
        if cursor.description is None:
            raise QueryRefused("the statement returns no rows: give one SELECT")
        columns = [str(d[0]) for d in cursor.description]
        head = json.dumps(columns, ensure_ascii=False).encode()
        # what the answer holds besides the rows, with room for its numbers
        budget = max_bytes - len(head) - 256
        rows, truncated_by = _bounded_rows(cursor, max_rows, budget)
    except duckdb.InterruptException as e:
        raise QueryTimeout(f"the query ran longer than {timeout_s:g}s and was stopped; narrow it down "
                           "(filter on run_id, or use run_metrics(run_id, key))",
                           details={"timeout_s": timeout_s, "limit": "MLHUB_API_QUERY_TIMEOUT_S"}) from e
    except duckdb.Error as e:
        raise engine.query_error(e) from e
    finally:
        timer.cancel()
        cursor.close()
    elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
    limit = None
    if truncated_by == "rows":
        limit = {"name": "max_rows", "value": max_rows}
    elif truncated_by == "bytes":
        limit = {"name": "MLHUB_API_QUERY_MAX_BYTES", "value": max_bytes}
    tail = json.dumps({"row_count": len(rows), "truncated": truncated_by is not None, "truncated_by": truncated_by,
                       "limit": limit, "elapsed_ms": elapsed_ms})
    return b'{"columns":' + head + b',"rows":[' + b",".join(rows) + b"]," + tail[1:].encode()


def _bounded_rows(cursor: duckdb.DuckDBPyConnection, max_rows: int, budget: int) -> tuple[list[bytes], str | None]:
    """Rows as JSON arrays, fetched a few at a time, until max_rows, or until the next would take their bytes
    past budget."""
    rows: list[bytes] = []
    used = 0
    widest = 0
    # one row first, then as many as a quarter of the room left holds at the widest row seen: rows of huge cells
    # come one at a time (8 at a time took the API's RSS 70 MB higher on 10 MB cells), narrow rows in bulk
    size = 1
    while batch := cursor.fetchmany(size):
        for row in batch:
            if len(rows) == max_rows:
                return rows, "rows"
            encoded = json.dumps([json_cell(v) for v in row], ensure_ascii=False, separators=(",", ":"),
                                 default=str).encode()
            used += len(encoded) + 1
            if used > budget:
                return rows, "bytes"
            rows.append(encoded)
            widest = max(widest, len(encoded))
        size = max(1, min(BATCH_ROWS, (budget - used) // (4 * widest + 1)))
    return rows, None
