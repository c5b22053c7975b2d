"""Audit: rebuild every projection into a scratch target and compare it with the live one, table by table.

The live read model is read in one transaction together with its checkpoint, so a projector still running
does not make the comparison race; the scratch rebuild stops at exactly that checkpoint (and the metric
tables at theirs). Each read-model table is compared by row count and a digest over its rows in primary-key
order (values normalized, so SQLite and PostgreSQL compare equal); on a difference the rows that differ are
named by primary key. The metric table is compared per run (count and an order-independent content hash),
whatever its file layout or compaction state. The audit seals are recomputed as well (see eventlog/seals.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlhub.analytics import POINTS_SCHEMA, MetricsLocation, MetricTables, parquet_select
from mlhub.eventlog import EventLog, SealReport, verify_seals
from mlhub.projections.rebuild import Progress, rebuild
from mlhub.readmodel import create_engine, tables

#: Tables that are bookkeeping of a projector, not content (positions are compared separately).
SKIPPED_TABLES = {"projector_checkpoints", "alembic_version"}
#: Columns that record when something was projected (wall clock), not what.
SKIPPED_COLUMNS = {"dead_letters": {"recorded_at"}}
MAX_NAMED = 5


@dataclass(frozen=True)
class TableDigest:
    """Row count, content digest and per-row hashes (by primary key) of one table."""

    rows: int
    digest: str
    row_hashes: dict[tuple[Any, ...], str]


@dataclass
class ReadModelSnapshot:
    """Digests of every content table of a read model and its SQL projector's checkpoint."""

    checkpoint: int
    tables: dict[str, TableDigest]


@dataclass
class AuditReport:
    """Every difference found, each as a sentence naming the table (or seal) and the rows."""

    checkpoint_sql: int = 0
    checkpoint_metrics: int = 0
    tables_compared: int = 0
    metric_points: int = 0
    seals: SealReport | None = None
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing drifted and every seal held."""
        return not self.differences and (self.seals is None or self.seals.ok)


def _normalize(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
    if isinstance(value, float):
        return repr(value) if not math.isnan(value) else "nan"
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict | list):
        return json.loads(json.dumps(value, sort_keys=True, default=str))
    return value


def snapshot_read_model(engine: Engine, projector: str = "sql") -> ReadModelSnapshot:
    """Digest every content table and read the projector's checkpoint, in one read transaction."""
    result: dict[str, TableDigest] = {}
    with engine.connect() as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        checkpoint = conn.execute(
            sa.select(tables.projector_checkpoints.c.position).where(
                tables.projector_checkpoints.c.projector == projector)
        ).scalar_one_or_none() or 0
        for table in tables.metadata.sorted_tables:
            if table.name in SKIPPED_TABLES:
                continue
            skipped = SKIPPED_COLUMNS.get(table.name, set())
            columns = [c for c in table.columns if c.name not in skipped]
            keys = list(table.primary_key.columns)
            whole = hashlib.sha256()
            row_hashes: dict[tuple[Any, ...], str] = {}
            for row in conn.execute(sa.select(*columns).order_by(*keys)):
                values = [_normalize(v) for v in row]
                h = hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()
                row_hashes[tuple(getattr(row, k.name) for k in keys)] = h
                whole.update(h.encode())
            result[table.name] = TableDigest(len(row_hashes), whole.hexdigest(), row_hashes)
    return ReadModelSnapshot(int(checkpoint), result)


def compare_read_models(live: ReadModelSnapshot, rebuilt: ReadModelSnapshot) -> list[str]:
    """Each table whose rows differ, naming the rows missing, extra or changed in the live read model."""
    differences: list[str] = []
    for name, want in rebuilt.tables.items():
        have = live.tables.get(name)
        if have is None:
            differences.append(f"table {name}: missing from the live read model")
            continue
        if have.digest == want.digest and have.rows == want.rows:
            continue
        missing = [k for k in want.row_hashes if k not in have.row_hashes]
        extra = [k for k in have.row_hashes if k not in want.row_hashes]
        changed = [k for k, h in want.row_hashes.items() if k in have.row_hashes and have.row_hashes[k] != h]
        parts = [f"table {name}: {have.rows} rows live, {want.rows} rebuilt from the log"]
        for label, keys in (("changed", changed), ("missing", missing), ("not in the log", extra)):
            if keys:
                shown = ", ".join(str(k if len(k) > 1 else k[0]) for k in keys[:MAX_NAMED])
                parts.append(f"{len(keys)} {label} ({shown}{' ...' if len(keys) > MAX_NAMED else ''})")
        differences.append("; ".join(parts))
    return differences


def metric_digest(location: MetricsLocation | Path) -> tuple[int, dict[str, tuple[int, int]]]:
    """The metric table's checkpoint, and per run: point count and an order-independent content hash."""
    tables = MetricTables(location)
    snap = tables.snapshot()
    if not snap.points_files:
        return snap.checkpoint, {}
    con = duckdb.connect()
    try:
        points = parquet_select(con, snap.points_files, POINTS_SCHEMA, hive=False, by_name=snap.legacy_points,
                                location=tables.location)
        rows = con.execute(
            "SELECT run_id, count(*), sum(hash(key, step, epoch, value, timestamp, experiment_id, seq, attempt)) "
            f"FROM ({points}) GROUP BY run_id"
        ).fetchall()
    finally:
        con.close()
    return snap.checkpoint, {str(r[0]): (int(r[1]), int(r[2])) for r in rows}


def compare_metrics(live: dict[str, tuple[int, int]], rebuilt: dict[str, tuple[int, int]]) -> list[str]:
    """The runs whose metric points differ between the live metric table and the one rebuilt from the log."""
    runs = sorted(set(live) | set(rebuilt))
    bad = [r for r in runs if live.get(r) != rebuilt.get(r)]
    if not bad:
        return []
    detail = ", ".join(f"{r} ({live.get(r, (0, 0))[0]} live vs {rebuilt.get(r, (0, 0))[0]} rebuilt)"
                       for r in bad[:MAX_NAMED])
    return [f"metric table: points of {len(bad)} runs differ: {detail}{' ...' if len(bad) > MAX_NAMED else ''}"]


async def verify(
    event_log: EventLog,
    live_engine: Engine,
    live_metrics: MetricsLocation | Path,
    *,
    scratch_dir: Path | None = None,
    check_seals: bool = True,
    progress: Progress | None = None,
) -> AuditReport:
    """Rebuild into a scratch SQLite database and metrics folder, compare with the live ones, check seals."""
    import asyncio

    report = AuditReport()
    live = await asyncio.to_thread(snapshot_read_model, live_engine)
    live_ckpt, live_points = await asyncio.to_thread(metric_digest, live_metrics)
    report.checkpoint_sql, report.checkpoint_metrics = live.checkpoint, live_ckpt
    with tempfile.TemporaryDirectory(prefix="mlhub-audit-", dir=scratch_dir) as tmp:
        scratch = create_engine(f"sqlite:///{Path(tmp) / 'scratch.db'}", writer=True)
        try:
            await rebuild(event_log, engine=scratch, metrics_dir=Path(tmp) / "metrics", sql_until=live.checkpoint,
                          metrics_until=live_ckpt, progress=progress)
            rebuilt = await asyncio.to_thread(snapshot_read_model, scratch)
        finally:
            scratch.dispose()
        _, rebuilt_points = await asyncio.to_thread(metric_digest, Path(tmp) / "metrics")
    report.tables_compared = len(rebuilt.tables)
    report.metric_points = sum(n for n, _ in live_points.values())
    report.differences += compare_read_models(live, rebuilt)
    report.differences += compare_metrics(live_points, rebuilt_points)
    if check_seals:
        report.seals = await verify_seals(event_log)
    return report
