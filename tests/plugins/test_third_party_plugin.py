"""A third plugin, defined in a separate test package (tests/plugin_package) and registered through its own
entry point, runs end to end with no change under src/mlhub/: submit, worker, metrics, reproduction."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

from tests.worker.helpers import RunningWorker

from mlhub.eventlog import EventLog
from mlhub.events import ArtifactStored, DatasetVersionRecorded
from mlhub.plugins import ENTRY_POINT_GROUP, PluginConfigError, available_plugins, load_plugin
from mlhub.scheduler import compare, load_config, read_run, reproduce, submit, wait_for_job

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests" / "plugin_package" / "wine-logreg.yaml"


def test_the_plugin_comes_from_its_own_distribution_not_from_mlhub() -> None:
    (entry,) = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == "wine-logreg"]
    assert entry.dist is not None and entry.dist.name == "mlhub-wine-plugin"
    assert "wine-logreg" in available_plugins()
    module_file = Path(__import__(entry.module).__file__ or "")
    assert (ROOT / "tests" / "plugin_package") in module_file.parents
    assert (ROOT / "src" / "mlhub") not in module_file.parents


def test_its_config_errors_are_named_like_the_built_ins() -> None:
    plugin = load_plugin("wine-logreg")
    config = load_config(CONFIG).config.model_dump(mode="json")
    plugin.validate_config(config)
    config["model"]["lr"] = -1
    try:
        plugin.validate_config(config)
    except PluginConfigError as e:
        assert str(e) == "model.lr: must be a number > 0, got -1"
    else:
        raise AssertionError("a negative learning rate was accepted")


async def test_a_job_of_the_third_party_plugin_trains_is_recorded_and_reproduces(
    event_log: EventLog, tmp_path: Path
) -> None:
    loaded = load_config(CONFIG)
    job = await submit(event_log, loaded.config, producer="test")
    async with RunningWorker(event_log, tmp_path):
        outcome = await wait_for_job(event_log, job.job_id, timeout_s=120)
        assert outcome.succeeded, outcome.error
        _, again = await reproduce(event_log, job.run_id, producer="test")
        assert (await wait_for_job(event_log, again.job_id, timeout_s=120)).succeeded

    original = await read_run(event_log, job.run_id)
    assert original.status == "finished"
    assert {"train_loss", "val_loss", "val_acc", "test_loss", "test_acc"} <= set(original.final_metrics)
    assert original.final_metrics["test_acc"] > 0.8  # three cultivars; chance is about 0.4
    run_events = [r.envelope.event for r in (await event_log.read_aggregate("run", job.run_id)).events]
    (dataset,) = [e for e in run_events if isinstance(e, DatasetVersionRecorded)]
    assert (dataset.name, dataset.num_examples) == ("sklearn-wine", 178)
    assert [e.kind for e in run_events if isinstance(e, ArtifactStored)] == ["checkpoint"]  # no ONNX hook
    assert compare(original, await read_run(event_log, again.run_id)).all_match
