"""The DuckDB query layer: views, joins with the read model, leaderboard directions, read-only refusals."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from tests.analytics.conftest import Events

from mlhub.analytics import MetricTableWriter, QueryEngine, QueryRefused


@pytest.fixture
def metrics_dir(tmp_path: Path, events: Events) -> Path:
    """Three runs: r1 and r2 in expA, r3 in expB; acc (max is better) and loss (min is better), one NaN."""
    envs = [events.run_created("r1", "expA"), events.run_created("r2", "expA"), events.run_created("r3", "expB"),
            events.metrics("r1", {"acc": [0.1, 0.7, 0.6], "loss": [3.0, 1.0, 2.0]}),
            events.metrics("r2", {"acc": [0.2, 0.9, float("nan")], "loss": [2.5, 0.5, 0.7]}),
            events.metrics("r3", {"acc": [0.3], "loss": [9.0]})]
    writer = MetricTableWriter(tmp_path / "metrics")
    writer.apply_records(list(enumerate(envs, start=1)))
    writer.flush()
    return tmp_path / "metrics"


READ_MODEL = {
    "runs": pa.table({"run_id": ["r1", "r2", "r3"], "experiment_id": ["expA", "expA", "expB"],
                      "name": ["first", "second", "third"], "status": ["finished", "finished", "failed"]}),
    "params": pa.table({"run_id": ["r1", "r2", "r3"], "key": ["lr", "lr", "lr"], "value": ["0.1", "0.01", "1"]}),
    "metric_definitions": pa.table({"name": ["acc", "loss"], "direction": ["max", "min"],
                                    "unit": ["", ""], "description": ["", ""]}),
}


def test_views_answer_and_join_runs_params_metrics(metrics_dir: Path) -> None:
    with QueryEngine(metrics_dir, READ_MODEL) as q:
        assert {"metrics", "runs", "params", "metric_summary", "leaderboard"} <= set(q.views)
        assert q.query("SELECT count(*) AS n FROM metrics").to_pylist() == [{"n": 14}]
        rows = q.query(
            "SELECT r.name, p.value AS lr, max(m.value) AS best FROM runs r JOIN params p USING (run_id) "
            "JOIN metrics m USING (run_id) WHERE p.key = 'lr' AND m.key = 'loss' GROUP BY ALL ORDER BY r.name"
        ).to_pylist()
        assert rows == [{"name": "first", "lr": "0.1", "best": 3.0}, {"name": "second", "lr": "0.01", "best": 2.5},
                        {"name": "third", "lr": "1", "best": 9.0}]
        history = q.run_history("r1", "loss").to_pylist()
        assert [(h["step"], h["value"]) for h in history] == [(0, 3.0), (1, 1.0), (2, 2.0)]
        macro = q.query("SELECT step, value FROM run_metrics('r1', 'loss')").to_pylist()
        assert [(h["step"], h["value"]) for h in macro] == [(0, 3.0), (1, 1.0), (2, 2.0)]


def test_metric_summary_and_nan(metrics_dir: Path) -> None:
    with QueryEngine(metrics_dir, READ_MODEL) as q:
        (s,) = q.query("SELECT * FROM metric_summary WHERE run_id = 'r2' AND key = 'acc'").to_pylist()
        assert (s["count"], s["nan_count"], s["min_value"], s["max_value"], s["last_step"]) == (3, 1, 0.2, 0.9, 2)
        assert math.isnan(s["last_value"]) and s["experiment_id"] == "expA"
        (nan,) = q.query("SELECT value FROM metrics WHERE run_id = 'r2' AND key = 'acc' AND step = 2").to_pylist()
        assert math.isnan(nan["value"])
        # A WHERE on value: the data files carry no statistics on it, so no row group is pruned by a NaN-less
        # min/max and the optimizer (left on) cannot prove isnan false.
        assert q.query("SELECT count(*) AS n FROM metrics WHERE isnan(value)").to_pylist() == [{"n": 1}]
        assert q.query("SELECT count(*) AS n FROM metrics WHERE run_id = 'r2' AND key = 'acc' "
                       "AND NOT isnan(value)").to_pylist() == [{"n": 2}]


def test_leaderboard_picks_best_by_direction(metrics_dir: Path) -> None:
    with QueryEngine(metrics_dir, READ_MODEL) as q:
        rows = q.query("SELECT metric, run_id, best_value, best_step, rank FROM leaderboard "
                       "WHERE experiment_id = 'expA' ORDER BY metric, rank").to_pylist()
    assert rows == [
        {"metric": "acc", "run_id": "r2", "best_value": 0.9, "best_step": 1, "rank": 1},  # max; NaN ignored
        {"metric": "acc", "run_id": "r1", "best_value": 0.7, "best_step": 1, "rank": 2},
        {"metric": "loss", "run_id": "r2", "best_value": 0.5, "best_step": 1, "rank": 1},  # min
        {"metric": "loss", "run_id": "r1", "best_value": 1.0, "best_step": 1, "rank": 2},
    ]


def test_empty_metric_tables_and_no_read_model(tmp_path: Path) -> None:
    with QueryEngine(tmp_path / "none") as q:
        assert q.query("SELECT count(*) AS n FROM metrics").to_pylist() == [{"n": 0}]
        assert q.query("SELECT * FROM leaderboard").num_rows == 0
        assert q.query("SELECT * FROM runs").column_names[:2] == ["run_id", "experiment_id"]


@pytest.mark.parametrize(
    ("sql", "refused"),
    [
        ("INSERT INTO readmodel.runs VALUES ('x', 'y', 'z', 'w')", "INSERT"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("COPY (SELECT 1) TO '/tmp/out.csv'", "COPY"),
        ("ATTACH '/tmp/other.db' AS other", "ATTACH"),
        ("INSTALL httpfs", "LOAD"),  # DuckDB reports INSTALL as a LOAD statement
        ("LOAD httpfs", "LOAD"),
        ("PRAGMA enable_profiling", "PRAGMA"),
        ("SET enable_external_access = true", "SET"),
        ("DROP VIEW metrics", "DROP"),
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
        ("SELECT * FROM read_parquet('/tmp/x.parquet')", "read_parquet"),
        ("SELECT * FROM read_text('/etc/passwd')", "read_text"),
        ("SELECT * FROM glob('/etc/*')", "glob"),
        ("SELECT * FROM '/etc/passwd'", "/etc/passwd"),
        ("SELECT 1; DROP VIEW metrics", "exactly one statement"),
        ("SELECT * FROM metrics WHERE run_id IN (SELECT column0 FROM read_csv('/etc/hosts'))", "read_csv"),
        ("SELECT getenv('HOME')", "getenv"),
    ],
)
def test_read_only_refusals_name_what_was_refused(metrics_dir: Path, sql: str, refused: str) -> None:
    with QueryEngine(metrics_dir, READ_MODEL) as q:
        with pytest.raises(QueryRefused, match=refused):
            q.query(sql)
        assert q.query("SELECT count(*) AS n FROM metrics").to_pylist() == [{"n": 14}]  # nothing changed


def test_engine_connection_is_locked_even_past_the_parser(metrics_dir: Path) -> None:
    """Defense in depth: the raw connection itself cannot read files or unlock its configuration."""
    with QueryEngine(metrics_dir, READ_MODEL) as q:
        with pytest.raises(Exception, match="disabled|Permission"):
            q.connection.execute("SELECT * FROM read_csv('/etc/passwd')").fetchall()
        with pytest.raises(Exception, match="locked"):
            q.connection.execute("SET enable_external_access = true")


def test_mlhub_query_cli_joins_runs_params_and_metrics(metrics_dir: Path, tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "readmodel.db")
    db.executescript(
        "CREATE TABLE runs (run_id TEXT PRIMARY KEY, experiment_id TEXT, name TEXT, status TEXT);"
        "CREATE TABLE params (run_id TEXT, key TEXT, value TEXT);"
        "CREATE TABLE metric_definitions (name TEXT, direction TEXT, unit TEXT, description TEXT);"
        "INSERT INTO runs VALUES ('r1','expA','first','finished'), ('r2','expA','second','finished');"
        "INSERT INTO params VALUES ('r1','lr','0.1'), ('r2','lr','0.01');"
        "INSERT INTO metric_definitions VALUES ('loss','min','',''), ('acc','max','','');"
    )
    db.commit()
    db.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLHUB_")}
    env["MLHUB_DATA_DIR"] = str(tmp_path)
    sql = ("SELECT r.name, p.value AS lr, l.best_value FROM runs r JOIN params p USING (run_id) "
           "JOIN leaderboard l USING (run_id) WHERE l.metric = 'loss' ORDER BY r.name")
    out = subprocess.run([sys.executable, "-m", "mlhub.cli", "query", "--direct", sql, "--format", "json"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"name": "first", "lr": "0.1", "best_value": 1.0},
                                      {"name": "second", "lr": "0.01", "best_value": 0.5}]
    table = subprocess.run([sys.executable, "-m", "mlhub.cli", "query", "--direct",
                            "SELECT count(*) AS n FROM metrics"], env=env, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0 and "14" in table.stdout and "(1 row)" in table.stdout
    refused = subprocess.run([sys.executable, "-m", "mlhub.cli", "query", "--direct",
                              "SELECT * FROM read_csv('/etc/passwd')"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "QUERY_REFUSED" in refused.stderr and "read_csv" in refused.stderr
