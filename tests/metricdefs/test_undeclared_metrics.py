"""Undeclared metric keys are kept and flagged: metric_summaries.declared in the read model (SQLite and
PostgreSQL) and the DuckDB view undeclared_metrics, both projections of real MetricsLogged events, and the flag
comes out the same on a replay whatever the batching."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mlhub.analytics import MetricTableWriter, QueryEngine
from mlhub.commands.query import load_readmodel_tables
from mlhub.eventlog import EventLog
from mlhub.events import Envelope, MetricsLogged
from mlhub.metricdefs import SchemaFiles, apply_definitions
from mlhub.projections import SqlProjector, run_until
from mlhub.projections.audit import compare_read_models, snapshot_read_model
from mlhub.readmodel import downgrade, migrate
from mlhub.readmodel import tables as t
from mlhub.readmodel.testing import temporary_database


async def log_metrics(log: EventLog, run_id: str, values: dict[str, list[float]]) -> None:
    points = [(key, v, step, 0, 1_700_000_000_000 + step) for key, vs in values.items() for step, v in enumerate(vs)]
    await log.append(Envelope(event=MetricsLogged.from_points(run_id, points), producer="tests@host"))


def flags(engine: Engine) -> dict[tuple[str, str], bool]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.metric_summaries.c.run_id, t.metric_summaries.c.key,
                                      t.metric_summaries.c.declared))
        return {(run_id, key): bool(declared) for run_id, key, declared in rows}


def declare(project: SchemaFiles, name: str) -> None:
    project.definitions.write_text(project.definitions.read_text() + f"  {name}:\n    direction: max\n")


async def _scenario(log: EventLog, project: SchemaFiles) -> None:
    """val_acc declared; custom_score logged by r1 and r2 before it is declared, then by r3 after; train/loss
    (a key no definition can name) by r1."""
    await apply_definitions(log, project.definitions)
    await log_metrics(log, "r1", {"val_acc": [0.5, 0.7], "custom_score": [1.0], "train/loss": [2.0]})
    await log_metrics(log, "r2", {"custom_score": [3.0]})
    declare(project, "custom_score")
    await apply_definitions(log, project.definitions)
    await log_metrics(log, "r3", {"custom_score": [4.0], "val_acc": [1.5]})


@pytest.mark.parametrize("max_batch", [1, 1000])
async def test_undeclared_keys_are_kept_flagged_and_unflagged_once_declared(
    event_log: EventLog, database: Engine, project: SchemaFiles, max_batch: int
) -> None:
    await apply_definitions(event_log, project.definitions)
    await log_metrics(event_log, "r1", {"val_acc": [0.5, 0.7], "custom_score": [1.0], "train/loss": [2.0]})
    await log_metrics(event_log, "r2", {"custom_score": [3.0]})
    await run_until(event_log, [SqlProjector(database)], max_batch=max_batch)
    assert flags(database) == {("r1", "val_acc"): True, ("r1", "custom_score"): False,
                               ("r1", "train/loss"): False, ("r2", "custom_score"): False}
    with database.connect() as conn:
        kept = conn.execute(sa.select(t.metric_summaries.c["count"]).where(
            t.metric_summaries.c.key == "custom_score", t.metric_summaries.c.run_id == "r1")).scalar_one()
    assert kept == 1  # the point is kept

    declare(project, "custom_score")
    await apply_definitions(event_log, project.definitions)
    await log_metrics(event_log, "r3", {"custom_score": [4.0]})
    await log_metrics(event_log, "r2", {"custom_score": [5.0]})
    await run_until(event_log, [SqlProjector(database)], max_batch=max_batch)
    assert flags(database) == {("r1", "val_acc"): True, ("r1", "custom_score"): True, ("r1", "train/loss"): False,
                               ("r2", "custom_score"): True, ("r3", "custom_score"): True}


async def test_definition_in_the_same_batch_as_earlier_points_flags_them(
    event_log: EventLog, database: Engine, project: SchemaFiles
) -> None:
    await _scenario(event_log, project)
    await run_until(event_log, [SqlProjector(database)])  # one batch: points, then the definition, then points
    assert flags(database) == {("r1", "val_acc"): True, ("r1", "custom_score"): True, ("r1", "train/loss"): False,
                               ("r2", "custom_score"): True, ("r3", "custom_score"): True, ("r3", "val_acc"): True}


async def test_the_flag_survives_replay(event_log: EventLog, database: Engine, project: SchemaFiles,
                                        tmp_path: Path) -> None:
    await _scenario(event_log, project)
    await run_until(event_log, [SqlProjector(database)], max_batch=1)
    kind = "postgresql" if database.dialect.name == "postgresql" else "sqlite"
    (tmp_path / "replay").mkdir()
    with temporary_database(kind, tmp_path / "replay") as fresh:
        migrate(fresh)
        await run_until(event_log, [SqlProjector(fresh)], max_batch=500)
        assert flags(fresh) == flags(database)
        assert compare_read_models(snapshot_read_model(database), snapshot_read_model(fresh)) == []


async def test_duckdb_views_show_undeclared_keys_and_range_violations(
    event_log: EventLog, project: SchemaFiles, tmp_path: Path
) -> None:
    await _scenario(event_log, project)
    url = f"sqlite:///{tmp_path / 'readmodel.db'}"
    migrate(url)
    writer = MetricTableWriter(tmp_path / "metrics")
    from mlhub.readmodel import create_engine

    engine = create_engine(url, writer=True)
    try:
        await run_until(event_log, [SqlProjector(engine), writer])
    finally:
        engine.dispose()
    with QueryEngine(tmp_path / "metrics", load_readmodel_tables(url)) as q:
        undeclared = q.query("SELECT key, runs, points FROM undeclared_metrics ORDER BY key").to_pylist()
        assert undeclared == [{"key": "train/loss", "runs": 1, "points": 1}]
        violations = q.query("SELECT run_id, key, value, max_value FROM metric_range_violations").to_pylist()
        assert violations == [{"run_id": "r3", "key": "val_acc", "value": 1.5, "max_value": 1.0}]


def test_alembic_0002_fills_the_flag_from_projected_definitions(database: Engine) -> None:
    downgrade(database, "0001_read_model")
    with database.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO metric_definitions (name, direction, unit, description, revision, defined_at, updated_at, "
            "last_seq) VALUES ('val_acc', 'max', '', '', 1, :at, :at, 1)"), {"at": "2026-01-01 00:00:00+00:00"})
        for key in ("val_acc", "other"):
            conn.execute(sa.text(
                "INSERT INTO metric_summaries (run_id, key, last_step, last_timestamp, count, nan_count, last_seq) "
                "VALUES ('r', :key, 0, 0, 1, 0, 2)"), {"key": key})
    migrate(database)
    assert flags(database) == {("r", "val_acc"): True, ("r", "other"): False}
    downgrade(database, "0001_read_model")
    assert "declared" not in {c["name"] for c in sa.inspect(database).get_columns("metric_summaries")}
