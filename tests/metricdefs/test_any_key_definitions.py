"""A metric definition may declare any valid metric key (`train/loss`, `val/acc@top1`): declared with
`mlhub metrics apply`, logged by a plugin through a real worker, projected, listed and ranked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.metricdefs.helpers import edit
from tests.metricdefs.test_metrics_cli import mlhub
from tests.worker.helpers import RunningWorker, wait_for

from mlhub.eventlog import EventLog
from mlhub.events import SUBJECT_PREFIX, MetricDefined, metric_aggregate_id
from mlhub.metricdefs import MetricDefinitionError, SchemaFiles, check_schema, load_definitions, lock_new_metrics
from mlhub.scheduler import load_config, submit

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = """metrics:
  train/loss:
    direction: min
    unit: nats
    min_value: 0
  val/acc@top1:
    direction: max
    unit: fraction
    min_value: 0
    max_value: 1
"""


async def test_slash_and_at_keys_are_declared_logged_listed_and_ranked(
    event_log: EventLog, nats_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    definitions = tmp_path / "metrics.yaml"
    definitions.write_text(DEFINITIONS)
    applied = mlhub(["metrics", "apply", "--file", str(definitions), "--migrations", str(tmp_path / "none")], data,
                    nats_url)
    assert applied.returncode == 0, applied.stderr
    assert "defined   train/loss" in applied.stdout and "defined   val/acc@top1" in applied.stdout
    again = mlhub(["metrics", "apply", "--file", str(definitions), "--migrations", str(tmp_path / "none")], data,
                  nats_url)
    assert "0 defined, 0 migration(s) applied, 2 unchanged" in again.stdout, again.stdout + again.stderr
    # The name is the key; the subject carries a token made from it.
    stored = [r.envelope.event async for r in event_log.replay(subject_filter=f"{SUBJECT_PREFIX}.metric.>")]
    assert {e.name for e in stored if isinstance(e, MetricDefined)} == {"train/loss", "val/acc@top1"}
    for name in ("train/loss", "val/acc@top1"):
        assert metric_aggregate_id(name) != name
        assert await event_log.last_sequence(f"{SUBJECT_PREFIX}.metric.{metric_aggregate_id(name)}.defined") > 0

    loaded = load_config(ROOT / "tests" / "plugin_package" / "wine-logreg.yaml",
                         ["+model.metric_names={train_loss: train/loss, val_acc: val/acc@top1}"])
    job = await submit(event_log, loaded.config, overrides=loaded.overrides, producer="test")
    async with RunningWorker(event_log, tmp_path / "worker") as worker:
        await wait_for(event_log, [job.job_id], timeout_s=120)
    assert worker.jobs_handled == [(job.job_id, "succeeded")]

    projected = mlhub(["projector", "--until-caught-up", "--no-wait"], data, nats_url)
    assert projected.returncode == 0, projected.stderr
    listed = mlhub(["metrics", "list", "--json"], data, nats_url)
    assert listed.returncode == 0, listed.stderr
    answer = json.loads(listed.stdout)
    assert {(d["name"], d["direction"], d["revision"]) for d in answer["definitions"]} == {
        ("train/loss", "min", 1), ("val/acc@top1", "max", 1)}
    assert {u["key"] for u in answer["undeclared"]} == {"val_loss", "test_loss", "test_acc"}
    text = mlhub(["metrics", "list"], data, nats_url).stdout
    assert "val/acc@top1" in text and "2 declared metric(s)" in text

    runs = mlhub(["runs", "--format", "json", "--filter", "metrics.`val/acc@top1` >= 0"], data, nats_url)
    assert runs.returncode == 0, runs.stderr
    (run,) = json.loads(runs.stdout)
    assert run["run_id"] == job.run_id and set(run["best_metrics"]) == {"train/loss", "val/acc@top1"}
    assert 0 <= run["best_metrics"]["val/acc@top1"] <= 1 and run["best_metrics"]["train/loss"] > 0

    board = mlhub(["query", "--direct", "--format", "json",
                   "SELECT metric, direction, run_id, rank, points FROM leaderboard ORDER BY metric"], data, nats_url)
    assert board.returncode == 0, board.stderr
    rows = json.loads(board.stdout)
    assert [(r["metric"], r["direction"], r["run_id"], r["rank"]) for r in rows] == [
        ("train/loss", "min", job.run_id, 1), ("val/acc@top1", "max", job.run_id, 1)]
    points = mlhub(["query", "--direct", "--format", "json",
                    "SELECT key, attempt, count(*) AS n FROM metrics GROUP BY ALL ORDER BY key"], data, nats_url)
    keys = {r["key"]: (r["attempt"], r["n"]) for r in json.loads(points.stdout)}
    assert keys["train/loss"] == (1, 3) and keys["val/acc@top1"][0] == 1  # 3 epochs, every point of attempt 1


def test_a_definitions_file_names_a_bad_key_and_a_migration_may_change_a_slash_key(project: SchemaFiles) -> None:
    bad = project.definitions.parent / "bad.yaml"
    bad.write_text("metrics:\n  val/../acc:\n    direction: max\n")
    with pytest.raises(MetricDefinitionError, match=r"metrics\.val/\.\./acc: a metric name is a metric key, and "
                                                    r"this one must not have a '\.\.' path segment"):
        load_definitions(bad)

    project.definitions.write_text(project.definitions.read_text() + DEFINITIONS.removeprefix("metrics:\n"))
    assert lock_new_metrics(project) == ["train/loss", "val/acc@top1"]
    assert check_schema(project) == []
    edit(project.definitions, "  train/loss:\n    direction: min\n    unit: nats\n",
         "  train/loss:\n    direction: min\n    unit: bits\n")
    (project.migrations / "0001_train_loss_bits.yaml").write_text(
        "metric: train/loss\nreason: log2 now\nchanges:\n  unit: {from: nats, to: bits}\n")
    # A changelog line about another key that starts with this one does not name it.
    changelog = project.changelog.read_text()
    project.changelog.write_text(changelog + "\n- `train/loss/ema` in bits (0001_train_loss_bits)\n")
    assert check_schema(project) == [
        f"{project.migrations / '0001_train_loss_bits.yaml'}: {project.changelog} has no entry for this migration: "
        "add a line naming both '0001_train_loss_bits' and 'train/loss'"]
    project.changelog.write_text(project.changelog.read_text() + "- `train/loss` in bits (0001_train_loss_bits).\n")
    assert check_schema(project) == []
