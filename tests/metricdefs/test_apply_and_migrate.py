"""apply_definitions and apply_migrations against a real event log, projected into real read models (SQLite and
PostgreSQL): new metrics are defined, changes need migrations, applied migrations are recognised from the log."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from tests.metricdefs.helpers import VAL_ACC_BLOCK, edit

from mlhub.eventlog import EventLog
from mlhub.events import MetricDefined, MetricMigrated
from mlhub.metricdefs import (
    METRIC_SUBJECTS,
    DefinitionChanged,
    MigrationConflict,
    SchemaFiles,
    apply_definitions,
    apply_migrations,
    load_definitions,
)
from mlhub.projections import SqlProjector, run_until
from mlhub.readmodel import tables as t

MIGRATION = """metric: val_acc
reason: Accuracy is reported in percent by the new evaluation code.
changes:
  unit: {from: fraction, to: percent}
  max_value: {from: 1, to: 100}
"""


def _to_percent(project: SchemaFiles) -> None:
    edit(project.definitions, VAL_ACC_BLOCK, VAL_ACC_BLOCK.replace("unit: fraction", "unit: percent")
         .replace("max_value: 1\n", "max_value: 100\n"))


async def metric_events(log: EventLog) -> list[MetricDefined | MetricMigrated]:
    return [r.envelope.event async for r in log.replay(subject_filter=METRIC_SUBJECTS)]  # type: ignore[misc]


def definitions(engine: Engine) -> dict[str, dict[str, object]]:
    with engine.connect() as conn:
        return {r["name"]: dict(r) for r in conn.execute(sa.select(t.metric_definitions)).mappings()}


async def test_apply_defines_every_metric_once_and_projects_it(
    event_log: EventLog, database: Engine, project: SchemaFiles
) -> None:
    result = await apply_definitions(event_log, project.definitions, migrations_dir=project.migrations)
    declared = load_definitions(project.definitions)
    assert result.defined == list(declared) and result.migrated == [] and result.unchanged == []
    last = await event_log.last_sequence()
    again = await apply_definitions(event_log, project.definitions, migrations_dir=project.migrations)
    assert again.defined == [] and again.unchanged == list(declared)
    assert await event_log.last_sequence() == last  # idempotent: nothing appended

    await run_until(event_log, [SqlProjector(database)])
    rows = definitions(database)
    assert set(rows) == set(declared)
    acc = rows["val_acc"]
    assert (acc["direction"], acc["unit"], acc["min_value"], acc["max_value"], acc["revision"]) == \
        ("max", "fraction", 0.0, 1.0, 1)
    assert rows["val_r2"]["min_value"] is None and rows["val_r2"]["max_value"] == 1.0


async def test_a_changed_definition_without_migration_is_refused_and_nothing_appended(
    event_log: EventLog, project: SchemaFiles
) -> None:
    await apply_definitions(event_log, project.definitions, migrations_dir=project.migrations)
    last = await event_log.last_sequence()
    _to_percent(project)
    project.definitions.write_text(project.definitions.read_text()
                                   + "  val_f1:\n    direction: max\n")  # a new metric in the same file
    with pytest.raises(DefinitionChanged) as caught:
        await apply_definitions(event_log, project.definitions, migrations_dir=project.migrations)
    message = str(caught.value)
    assert "val_acc.unit: 'fraction' in the event log, 'percent' in" in message
    assert "val_acc.max_value: 1.0 in the event log, 100.0 in" in message
    assert "migrations/metrics/" in message and "nothing was appended" in message
    assert caught.value.code == "METRIC_DEFINITION_CHANGED"
    assert {(c[0], c[1]) for c in caught.value.changes} == {("val_acc", "unit"), ("val_acc", "max_value")}
    assert await event_log.last_sequence() == last  # not even the new val_f1


async def test_a_migration_is_applied_once_and_projected(
    event_log: EventLog, database: Engine, project: SchemaFiles
) -> None:
    await apply_definitions(event_log, project.definitions, migrations_dir=project.migrations)
    _to_percent(project)
    (project.migrations / "0001_val_acc_percent.yaml").write_text(MIGRATION)
    result = await apply_definitions(event_log, project.definitions, migrations_dir=project.migrations)
    assert result.migrated == [("val_acc", "0001_val_acc_percent")] and result.defined == []
    last = await event_log.last_sequence()
    assert (await apply_migrations(event_log, project.migrations)).migrated == []
    assert (await apply_definitions(event_log, project.definitions, migrations_dir=project.migrations)).migrated == []
    assert await event_log.last_sequence() == last

    (migrated,) = [e for e in await metric_events(event_log) if isinstance(e, MetricMigrated)]
    assert migrated.name == "val_acc" and migrated.migration_id == "0001_val_acc_percent"
    assert (migrated.previous.unit, migrated.spec.unit, migrated.spec.max_value) == ("fraction", "percent", 100.0)

    await run_until(event_log, [SqlProjector(database)])
    acc = definitions(database)["val_acc"]
    assert (acc["unit"], acc["max_value"], acc["revision"], acc["last_migration_id"]) == \
        ("percent", 100.0, 2, "0001_val_acc_percent")


async def test_migrate_applies_pending_files_only_and_is_idempotent(event_log: EventLog, project: SchemaFiles) -> None:
    await apply_definitions(event_log, project.definitions, migrations_dir=project.migrations)
    (project.migrations / "0001_val_acc_percent.yaml").write_text(MIGRATION)
    (project.migrations / "0002_val_acc_wording.yaml").write_text(
        "metric: val_acc\nreason: clearer\nchanges:\n  description:\n"
        "    from: Share of validation examples classified correctly (digits-mlp).\n"
        "    to: Percentage of validation examples classified correctly.\n")
    assert (await apply_migrations(event_log, project.migrations)).migrated == [
        ("val_acc", "0001_val_acc_percent"), ("val_acc", "0002_val_acc_wording")]
    last = await event_log.last_sequence()
    assert (await apply_migrations(event_log, project.migrations)).migrated == []
    assert await event_log.last_sequence() == last


async def test_a_fresh_log_gets_the_whole_history(event_log: EventLog, project: SchemaFiles) -> None:
    """metrics.yaml already holds the migrated definition: a new log defines the first one, then migrates."""
    _to_percent(project)
    (project.migrations / "0001_val_acc_percent.yaml").write_text(MIGRATION)
    result = await apply_definitions(event_log, project.definitions, migrations_dir=project.migrations)
    assert "val_acc" in result.defined and result.migrated == [("val_acc", "0001_val_acc_percent")]
    acc = [e for e in await metric_events(event_log) if e.name == "val_acc"]
    assert [type(e).__name__ for e in acc] == ["MetricDefined", "MetricMigrated"]
    assert (acc[0].spec.unit, acc[1].spec.unit) == ("fraction", "percent")


async def test_migrations_that_do_not_fit_the_log_are_refused(event_log: EventLog, project: SchemaFiles) -> None:
    (project.migrations / "0001_val_acc_percent.yaml").write_text(MIGRATION)
    with pytest.raises(MigrationConflict, match="the event log does not define it: run `mlhub metrics apply`"):
        await apply_migrations(event_log, project.migrations)
    assert await event_log.last_sequence() == 0

    (project.migrations / "0001_val_acc_percent.yaml").unlink()
    await apply_definitions(event_log, project.definitions, migrations_dir=project.migrations)
    last = await event_log.last_sequence()
    (project.migrations / "0001_val_acc_percent.yaml").write_text(MIGRATION.replace("from: fraction", "from: ratio"))
    with pytest.raises(MigrationConflict, match="unit is 'fraction' in the event log, but the migration changes it "
                                                "from 'ratio'"):
        await apply_migrations(event_log, project.migrations)
    assert await event_log.last_sequence() == last


async def test_racing_applies_store_each_definition_once(nats_url: str, project: SchemaFiles) -> None:
    logs = [EventLog(nats_url) for _ in range(4)]
    for log in logs:
        await log.connect()
        await log.ensure_stream()
    try:
        await asyncio.gather(*(apply_definitions(log, project.definitions) for log in logs))
        defined = [e.name for e in await metric_events(logs[0])]
    finally:
        for log in logs:
            await log.close()
    assert sorted(defined) == sorted(load_definitions(project.definitions))
