"""Run statuses (mlhub.events.RunStatus) and abandoned attempts in the SQL read model, on SQLite and PostgreSQL.

The summaries a reader sees (metric_summaries, epoch_metrics, the runs list's metrics and best_metrics) are the
last attempt's only, by the rule of mlhub.events.final_metrics; the metric table keeps every attempt's points.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlhub.analytics import MetricTableWriter, QueryEngine
from mlhub.api.queries import search_runs
from mlhub.eventlog import EventLog
from mlhub.events import (
    DomainEvent,
    Envelope,
    JobCancelled,
    JobQueued,
    MetricDefined,
    MetricSeries,
    MetricsLogged,
    MetricSpec,
    RunCancelled,
    RunCrashed,
    RunCreated,
    RunFinished,
    RunHeartbeat,
    RunResumed,
    RunStarted,
    RunStatus,
    final_metrics,
    sha256_of,
)
from mlhub.projections import SqlProjector, run_until
from mlhub.projections.audit import verify
from mlhub.readmodel import dead_letters
from mlhub.readmodel import tables as t
from mlhub.readmodel.arrow import rows_to_arrow

from .test_sql_read_model import append, row, rows, utc


def points(run_id: str, key: str, values: list[float], first_step: int, *, attempt: int | None,
           epoch_every: int = 2) -> MetricsLogged:
    """One batch of one key at consecutive steps (timestamps follow the steps)."""
    steps = tuple(range(first_step, first_step + len(values)))
    series = MetricSeries(key=key, values=tuple(values), steps=steps, epochs=tuple(s // epoch_every for s in steps),
                          timestamps=tuple(1_700_000_000_000 + s for s in steps))
    return MetricsLogged(run_id=run_id, series=(series,), attempt=attempt)


async def test_run_end_events_give_the_run_status_words_and_jobs_keep_theirs(
    event_log: EventLog, database: Engine, sql_projector: SqlProjector
) -> None:
    config: dict[str, object] = {}
    stored = await append(
        event_log,
        JobQueued(job_id="j1", run_id="r1", experiment_id="e", plugin="p", config=config,
                  config_sha256=sha256_of(config)),
        JobCancelled(job_id="j1", reason="not needed", requested_by="ann"),
        RunCancelled(run_id="r1", reason="not needed"),
        RunCreated(run_id="sdk", experiment_id="e", name="script", source="sdk"),
        RunStarted(run_id="sdk", attempt=1),
        RunHeartbeat(run_id="sdk", attempt=1),
        RunCrashed(run_id="sdk", attempt=1, reason="no event for 310 s", silent_s=310.0, last_seq=6),
        RunHeartbeat(run_id="nobody", attempt=1),  # a run the read model does not know: no row for it
    )
    await run_until(event_log, [sql_projector], max_batch=2)
    job, killed, crashed = row(database, t.jobs, job_id="j1"), row(database, t.runs, run_id="r1"), \
        row(database, t.runs, run_id="sdk")
    assert (job["status"], killed["status"], killed["cancel_reason"]) == ("cancelled", "killed", "not needed")
    assert killed["status"] == RunStatus.KILLED and utc(killed["ended_at"]) == stored[2][1].occurred_at
    assert (crashed["status"], crashed["error_type"], crashed["error"]) == ("crashed", "RunCrashed",
                                                                            "no event for 310 s")
    assert utc(crashed["ended_at"]) == stored[6][1].occurred_at and crashed["last_seq"] == stored[6][0]
    assert [r["run_id"] for r in rows(database, t.runs, "run_id")] == ["r1", "sdk"]
    with database.connect() as conn:
        assert dead_letters(conn) == []  # heartbeats of unknown runs are no poison events

    alive = await append(event_log, RunResumed(run_id="sdk", attempt=1, resumed_by="ann"),
                         RunHeartbeat(run_id="sdk", attempt=1))
    await run_until(event_log, [sql_projector])
    resumed = row(database, t.runs, run_id="sdk")
    assert (resumed["status"], resumed["ended_at"], resumed["error_type"], resumed["error"]) == (
        "running", None, None, None)
    # The heartbeat moved only the row's position and time.
    assert resumed["last_seq"] == alive[1][0] and utc(resumed["updated_at"]) == alive[1][1].occurred_at
    assert {r["status"] for r in rows(database, t.runs, "run_id")} <= set(t.RUN_STATUSES)


async def _abandoned_attempt(event_log: EventLog) -> list[DomainEvent]:
    """A job's run: attempt 1 logs loss and acc, attempt 2 starts (its worker was presumed dead) and logs loss
    only, then a late attempt-1 batch arrives (its worker was not dead after all), and a pre-v3 batch (no
    attempt) of the current attempt. Returns the run's events as appended."""
    events: list[DomainEvent] = [
        MetricDefined(name="loss", spec=MetricSpec(direction="min")),
        RunCreated(run_id="r", experiment_id="e", name="retried", job_id="j"),
        RunStarted(run_id="r", attempt=1, worker_id="w1"),
        points("r", "loss", [0.9, 0.1, 0.05, 0.01], 0, attempt=1),
        points("r", "acc", [0.5, 0.6, 0.7, 0.8], 0, attempt=1),
        RunStarted(run_id="r", attempt=2, worker_id="w2"),
        points("r", "loss", [0.8, 0.6, 0.4], 0, attempt=2),
        points("r", "loss", [0.001], 9, attempt=1),  # late and from an abandoned attempt: never counts
        points("r", "loss", [0.3], 3, attempt=None),  # stored before v3: counts for the current attempt
        RunFinished(run_id="r", attempt=2),
    ]
    await append(event_log, *events)
    return events


def _summaries(database: Engine) -> dict[str, tuple[object, ...]]:
    return {r["key"]: (r["count"], r["last_value"], r["last_step"], r["min_value"], r["max_value"])
            for r in rows(database, t.metric_summaries, "run_id", "key")}


async def test_a_new_attempt_starts_the_summaries_over_and_a_late_batch_of_the_old_one_is_left_out(
    event_log: EventLog, database: Engine
) -> None:
    events = await _abandoned_attempt(event_log)
    expected = {"loss": (4, 0.3, 3, 0.3, 0.8)}
    for max_batch in (1, 1000):  # one event a transaction, and every event in one: the same rows
        with database.begin() as conn:
            for table in (t.metric_summaries, t.epoch_metrics, t.runs, t.metric_definitions,
                          t.projector_checkpoints):
                conn.execute(table.delete())
        await run_until(event_log, [SqlProjector(database)], max_batch=max_batch)
        assert _summaries(database) == expected, max_batch  # no acc: attempt 2 never logged it
        with database.connect() as conn:
            epochs = {(r.key, r.epoch): (r.value, r.step) for r in conn.execute(sa.select(t.epoch_metrics))}
        assert epochs == {("loss", 0): (0.6, 1), ("loss", 1): (0.3, 3)}, max_batch
        run = row(database, t.runs, run_id="r")
        assert (run["status"], run["attempt"], run["worker_id"]) == ("finished", 2, "w2")
    # The read model's last values are final_metrics' (what reproduce and the promotion gates judge).
    assert {k: v[1] for k, v in _summaries(database).items()} == final_metrics(events)
    with database.connect() as conn:  # the runs list: last and best (declared, min) values of attempt 2
        listed = search_runs(conn, experiment_ids=["e"], filter_text=None, order_by=None, max_results=10,
                             page_token=None)["data"]
        assert [(r["metrics"], r["best_metrics"]) for r in listed] == [({"loss": 0.3}, {"loss": 0.3})]
        by_loss = search_runs(conn, experiment_ids=[], filter_text="metrics.loss < 0.31", order_by=None,
                              max_results=10, page_token=None)["data"]
        assert [r["run_id"] for r in by_loss] == ["r"]


async def test_the_metric_table_keeps_every_attempt_and_audit_verify_still_holds(
    event_log: EventLog, database: Engine, tmp_path: Path
) -> None:
    await _abandoned_attempt(event_log)
    # A second run whose attempts went normally, so the leaderboard ranks two runs.
    await append(event_log, RunCreated(run_id="s", experiment_id="e", name="plain"),
                 RunStarted(run_id="s", attempt=1), points("s", "loss", [0.5, 0.35], 0, attempt=1),
                 RunFinished(run_id="s", attempt=1))
    metrics_dir = tmp_path / "metrics"
    await run_until(event_log, [SqlProjector(database), MetricTableWriter(metrics_dir)], max_batch=3)

    with database.connect() as conn:
        tables = {name: rows_to_arrow(table, conn.execute(sa.select(table)).mappings().all())
                  for name, table in (("runs", t.runs), ("metric_definitions", t.metric_definitions),
                                      ("epoch_metrics", t.epoch_metrics))}
    with QueryEngine(metrics_dir, tables) as q:
        stored = q.query("SELECT attempt, count(*) AS n, min(step) AS first FROM metrics WHERE run_id = 'r' "
                         "GROUP BY attempt ORDER BY attempt NULLS LAST").to_pylist()
        assert stored == [{"attempt": 1, "n": 9, "first": 0}, {"attempt": 2, "n": 3, "first": 0},
                          {"attempt": None, "n": 1, "first": 3}]
        summary = q.query("SELECT key, count, min_value, last_value FROM metric_summary WHERE run_id = 'r'")
        assert summary.to_pylist() == [{"key": "loss", "count": 4, "min_value": 0.3, "last_value": 0.3}]
        board = q.query("SELECT run_id, best_value, points, rank FROM leaderboard ORDER BY rank").to_pylist()
        assert board == [{"run_id": "r", "best_value": 0.3, "points": 4, "rank": 1},
                         {"run_id": "s", "best_value": 0.35, "points": 2, "rank": 2}]
        assert q.query("SELECT count(*) AS n FROM run_metrics('r', 'loss') WHERE attempt = 1").to_pylist() == [
            {"n": 5}]

    report = await verify(event_log, database, metrics_dir, check_seals=False, scratch_dir=tmp_path)
    assert report.ok, report.differences
    assert report.metric_points == 15


async def test_a_points_table_written_before_the_attempt_column_reads_and_gains_it(tmp_path: Path) -> None:
    """A Delta table of the old layout (no attempt, min/max statistics on value that leave NaN out) reads as
    before (attempt NULL, NaN counted), is rewritten by compaction even as a single file, and gets the column
    with the first append after the upgrade (delta-rs schema merge)."""
    from deltalake import DeltaTable, write_deltalake

    from mlhub.analytics import POINTS_SCHEMA, MetricTables
    from mlhub.analytics.layout import PARTITION_COLUMN, POINTS_TABLE, run_bucket, with_points_schema

    old_schema = pa.schema([f for f in POINTS_SCHEMA if f.name != "attempt"])
    metrics_dir = tmp_path / "metrics"
    bucket = run_bucket("old")
    old_rows = pa.table({"bucket": pa.array([bucket] * 2, pa.int32()), "run_id": ["old", "old"],
                         "experiment_id": ["e", "e"], "key": ["loss", "loss"], "step": [0, 1], "epoch": [0, 0],
                         "value": [1.0, float("nan")], "timestamp": [1, 2], "seq": [1, 1]}, schema=old_schema)
    for _ in range(2):
        write_deltalake(str(metrics_dir / POINTS_TABLE), old_rows, mode="append", partition_by=[PARTITION_COLUMN])
    assert MetricTables(metrics_dir).snapshot().legacy_points
    with QueryEngine(metrics_dir) as q:
        assert q.query("SELECT count(*) AS n, count(attempt) AS a FROM metrics").to_pylist() == [{"n": 4, "a": 0}]
        (s,) = q.query("SELECT count, nan_count, max_value FROM metric_summary").to_pylist()
        assert s == {"count": 4, "nan_count": 2, "max_value": 1.0}
    assert MetricTables(metrics_dir).compact().partitions == [bucket]  # rewrites old files with the column
    assert not MetricTables(metrics_dir).snapshot().legacy_points
    with QueryEngine(metrics_dir) as q:
        assert q.query("SELECT count(*) AS n FROM metrics WHERE isnan(value)").to_pylist() == [{"n": 2}]
    # A bucket with one file of the old layout is rewritten too (however few its files).
    write_deltalake(str(metrics_dir / POINTS_TABLE), with_points_schema(old_rows), mode="append",
                    partition_by=[PARTITION_COLUMN], schema_mode="merge")
    assert MetricTables(metrics_dir).snapshot().legacy_points  # value statistics (delta-rs default writer)
    assert MetricTables(metrics_dir).compact().partitions == [bucket]
    assert not MetricTables(metrics_dir).snapshot().legacy_points

    writer = MetricTableWriter(metrics_dir)
    created = RunCreated(run_id="new", experiment_id="e", name="new")
    writer.apply_records([(10, Envelope(event=created, producer="t")),
                          (11, Envelope(event=points("new", "loss", [0.7], 0, attempt=3), producer="t"))])
    writer.flush()
    assert "attempt" in [f.name for f in DeltaTable(str(metrics_dir / POINTS_TABLE)).schema().fields]
    with QueryEngine(metrics_dir) as q:
        got = q.query("SELECT run_id, attempt, count(*) AS n FROM metrics GROUP BY ALL ORDER BY run_id").to_pylist()
    assert got == [{"run_id": "new", "attempt": 3, "n": 1}, {"run_id": "old", "attempt": None, "n": 6}]
