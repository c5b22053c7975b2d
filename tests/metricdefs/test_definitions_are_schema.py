"""The gate: configs/metrics.yaml is schema. It must equal the lock's first definitions with migrations/metrics/*
applied, and every migration needs a CHANGELOG.md line naming it and its metric. The checker is shown to fail
for each way round it (on temporary copies of the files) and to pass when the change is done properly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.metricdefs.helpers import ROOT, VAL_ACC_BLOCK, edit

from mlhub.metricdefs import (
    MetricDefinitionError,
    SchemaFiles,
    check_schema,
    load_definitions,
    load_migration,
    lock_new_metrics,
    read_lock,
)

#: Every key the built-in plugins log (their docstrings and tests/worker name them); the worker test
#: test_reject_mode_trains_every_builtin_plugin checks the same with real runs in reject mode.
PLUGIN_KEYS = {"train_loss", "val_loss", "val_acc", "test_acc", "test_loss",
               "val_rmse", "val_mae", "val_r2", "test_rmse", "test_mae", "test_r2"}

MIGRATION = """metric: val_acc
reason: Accuracy is reported in percent by the new evaluation code.
changes:
  unit: {from: fraction, to: percent}
  max_value: {from: 1, to: 100}
"""


def test_the_repository_definitions_are_sound() -> None:
    assert check_schema(SchemaFiles.of(ROOT)) == []


def test_every_key_the_builtin_plugins_log_is_declared() -> None:
    declared = load_definitions(ROOT / "configs" / "metrics.yaml")
    assert PLUGIN_KEYS <= set(declared), PLUGIN_KEYS - set(declared)
    assert declared["val_acc"].direction == "max" and declared["val_loss"].direction == "min"


def _change_val_acc(project: SchemaFiles) -> None:
    edit(project.definitions, VAL_ACC_BLOCK, VAL_ACC_BLOCK.replace("unit: fraction", "unit: percent")
         .replace("max_value: 1\n", "max_value: 100\n"))


def test_a_changed_definition_without_a_migration_fails(project: SchemaFiles) -> None:
    assert check_schema(project) == []
    _change_val_acc(project)
    problems = check_schema(project)
    assert len(problems) == 2, problems
    assert any("val_acc.unit is 'percent'" in p and "'fraction'" in p and "needs a migration" in p for p in problems)
    assert any("val_acc.max_value is 100.0" in p for p in problems)


def test_a_migration_without_a_changelog_entry_fails_and_with_both_it_passes(project: SchemaFiles) -> None:
    _change_val_acc(project)
    (project.migrations / "0001_val_acc_percent.yaml").write_text(MIGRATION)
    problems = check_schema(project)
    assert len(problems) == 1 and "has no entry for this migration" in problems[0], problems
    assert "'0001_val_acc_percent'" in problems[0] and "'val_acc'" in problems[0]
    # A line naming the metric only, or the migration only, or a longer metric name, is not an entry.
    changelog = project.changelog.read_text()
    project.changelog.write_text(changelog + "\n- val_acc is in percent now.\n- 0001_val_acc_percent: val_acc_top5\n")
    assert len(check_schema(project)) == 1
    project.changelog.write_text(changelog + "\n- Metric `val_acc`: unit percent, range [0, 100] "
                                             "(migration 0001_val_acc_percent).\n")
    assert check_schema(project) == []


def test_a_migration_without_the_definition_change_fails(project: SchemaFiles) -> None:
    (project.migrations / "0001_val_acc_percent.yaml").write_text(MIGRATION)
    project.changelog.write_text(project.changelog.read_text() + "\n- val_acc: 0001_val_acc_percent\n")
    problems = check_schema(project)
    assert problems and all("val_acc" in p for p in problems), problems


def test_a_migration_whose_from_values_do_not_match_fails(project: SchemaFiles) -> None:
    _change_val_acc(project)
    (project.migrations / "0001_val_acc_percent.yaml").write_text(MIGRATION.replace("from: fraction", "from: ratio"))
    problems = check_schema(project)
    assert any("unit is 'fraction'" in p and "from 'ratio'" in p for p in problems), problems


def test_removing_a_metric_fails(project: SchemaFiles) -> None:
    edit(project.definitions, VAL_ACC_BLOCK, "")
    assert check_schema(project) == [f"{project.definitions}: metric val_acc was removed; a definition stays once "
                                     f"declared (its runs keep referring to it)"]


def test_a_new_metric_must_be_locked_and_locking_never_rewrites_an_entry(project: SchemaFiles) -> None:
    text = project.definitions.read_text()
    project.definitions.write_text(text + "  val_f1:\n    direction: max\n    min_value: 0\n    max_value: 1\n")
    problems = check_schema(project)
    assert len(problems) == 1 and "val_f1 is new" in problems[0] and "mlhub metrics lock" in problems[0]
    before = read_lock(project.lock)
    _change_val_acc(project)  # locking must not make this silent edit pass
    assert lock_new_metrics(project) == ["val_f1"]
    after = read_lock(project.lock)
    assert after["val_acc"] == before["val_acc"] and after["val_f1"].max_value == 1.0
    problems = check_schema(project)
    assert problems and all("val_acc" in p for p in problems), problems
    assert lock_new_metrics(project) == []


def test_a_new_metric_with_migrations_is_locked_at_its_first_definition(project: SchemaFiles) -> None:
    _change_val_acc(project)
    (project.migrations / "0001_val_acc_percent.yaml").write_text(MIGRATION)
    lock = json.loads(project.lock.read_text())
    del lock["baseline"]["val_acc"]
    project.lock.write_text(json.dumps(lock))
    assert lock_new_metrics(project) == ["val_acc"]
    baseline = read_lock(project.lock)["val_acc"]
    assert (baseline.unit, baseline.max_value) == ("fraction", 1.0)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("metrics:\n  val_acc:\n    direction: up\n", "metrics.yaml: metrics.val_acc.direction: Input should be 'max' "
                                                     "or 'min'"),
        ("metrics:\n  val_acc:\n    unit: x\n", "metrics.yaml: metrics.val_acc.direction: required field is missing"),
        ("metrics:\n  val_acc:\n    direction: max\n    colour: red\n", "metrics.val_acc.colour: unknown field"),
        ("metrics:\n  val_acc:\n    direction: max\n    min_value: '0'\n", "metrics.val_acc.min_value: Input should "
                                                                           "be a valid number"),
        ("metrics:\n  val_acc:\n    direction: max\n    min_value: 2\n    max_value: 1\n",
         "metrics.val_acc: min_value 2.0 is greater than max_value 1.0"),
        ("metrics:\n  /val/acc:\n    direction: max\n",
         "metrics./val/acc: a metric name is a metric key, and this one must not start with '/'"),
        ("metrics:\n  a:\n    direction: max\n  a:\n    direction: min\n", "found key 'a' a second time"),
        ("metrics: [a, b]\n", "must be a mapping with one key, `metrics`"),
        ("metrics:\n  a: {direction: max\n", "line 3, column 1: invalid YAML"),
    ],
)
def test_bad_definitions_name_the_file_and_field(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "metrics.yaml"
    path.write_text(body)
    with pytest.raises(MetricDefinitionError) as caught:
        load_definitions(path)
    assert expected in str(caught.value)
    assert str(caught.value).startswith(str(path))
    assert caught.value.code == "INVALID_METRIC_DEFINITION"


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        ("val_acc.yaml", MIGRATION, "a migration file is named NNNN_description.yaml"),
        ("0001_x.yaml", MIGRATION.replace("reason: Accuracy", "why: Accuracy"), "why: unknown key"),
        ("0001_x.yaml", MIGRATION.replace("  unit: {from: fraction, to: percent}\n", "  colour: {from: a, to: b}\n"),
         "changes.colour"),
        ("0001_x.yaml", MIGRATION.replace("to: percent", "to: fraction"), "changes.unit: from and to are equal"),
        ("0001_x.yaml", "metric: val_acc\nreason: r\nchanges: {}\n", "changes: Dictionary should have at least 1"),
    ],
)
def test_bad_migrations_name_the_file_and_field(tmp_path: Path, name: str, body: str, expected: str) -> None:
    path = tmp_path / name
    path.write_text(body)
    with pytest.raises(MetricDefinitionError) as caught:
        load_migration(path)
    assert expected in str(caught.value) and str(caught.value).startswith(str(path))


def test_two_migrations_with_one_number_are_refused(project: SchemaFiles) -> None:
    (project.migrations / "0001_a.yaml").write_text(MIGRATION)
    (project.migrations / "0001_b.yaml").write_text(MIGRATION)
    problems = check_schema(project)
    assert any("number 0001 is used by" in p for p in problems), problems
