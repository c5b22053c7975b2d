"""MLHUB_UNDECLARED_METRICS=reject: the worker reads the declared names from the event log and a run that logs any
other key fails with UNDECLARED_METRIC (real NATS, real Lightning runs of the built-in plugins, tiny limits)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.metricdefs.helpers import VAL_ACC_BLOCK, edit
from tests.worker.helpers import ROOT, TINY, RunningWorker, events_of, submit_digits, wait_for

from mlhub.eventlog import EventLog
from mlhub.events import MetricPoint, MetricsLogged, RunFailed, RunFinished
from mlhub.metricdefs import SchemaFiles, apply_definitions
from mlhub.scheduler import load_config, submit
from mlhub.settings import Settings
from mlhub.worker.metrics import JobMetrics, UndeclaredMetric


def logged_keys(events: list[object]) -> set[str]:
    return {p.key for e in events if isinstance(e, MetricsLogged) for p in e.points()}


async def test_reject_mode_trains_every_builtin_plugin(event_log: EventLog, tmp_path: Path) -> None:
    """Every key the built-in plugins log is declared in configs/metrics.yaml: reject mode lets them finish."""
    await apply_definitions(event_log, ROOT / "configs" / "metrics.yaml")
    digits = await submit_digits(event_log)
    loaded = load_config(ROOT / "configs" / "diabetes-regression.yaml", list(TINY))
    diabetes = await submit(event_log, loaded.config, overrides=loaded.overrides, producer="test")
    async with RunningWorker(event_log, tmp_path, undeclared_metrics="reject"):
        await wait_for(event_log, [digits.job_id, diabetes.job_id], timeout_s=120)
    for job in (digits, diabetes):
        run = await events_of(event_log, "run", job.run_id)
        assert isinstance(run[-1], RunFinished), run[-1]
    assert logged_keys(await events_of(event_log, "run", diabetes.run_id)) >= {"val_rmse", "test_r2"}


async def test_an_undeclared_key_fails_the_run_in_reject_mode_and_is_kept_in_keep_mode(
    event_log: EventLog, tmp_path: Path, project: SchemaFiles
) -> None:
    edit(project.definitions, VAL_ACC_BLOCK, "")  # the digits plugin logs val_acc every epoch
    await apply_definitions(event_log, project.definitions)
    rejected = await submit_digits(event_log)
    async with RunningWorker(event_log, tmp_path, undeclared_metrics="reject"):
        await wait_for(event_log, [rejected.job_id])
    run = await events_of(event_log, "run", rejected.run_id)
    failed = run[-1]
    assert isinstance(failed, RunFailed) and failed.error_type == "UndeclaredMetric", failed
    assert "'val_acc'" in failed.error and "MLHUB_UNDECLARED_METRICS=reject" in failed.error
    assert "val_acc" not in logged_keys(run)  # refused before it was sent

    # Queued only once the reject-mode worker has stopped, so that worker can never take the job meant for this one.
    kept = await submit_digits(event_log)
    async with RunningWorker(event_log, tmp_path / "keep"):  # the default: keep (and flag)
        await wait_for(event_log, [kept.job_id])
    run = await events_of(event_log, "run", kept.run_id)
    assert isinstance(run[-1], RunFinished) and "val_acc" in logged_keys(run)


def test_the_setting_reads_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().undeclared_metrics == "keep"
    monkeypatch.setenv("MLHUB_UNDECLARED_METRICS", "reject")
    assert Settings().undeclared_metrics == "reject"
    monkeypatch.setenv("MLHUB_UNDECLARED_METRICS", "drop")
    with pytest.raises(ValueError, match="undeclared_metrics"):
        Settings()


def test_the_sender_refuses_a_batch_with_any_undeclared_key_whole() -> None:
    sent: list[object] = []
    sender = JobMetrics("r", sent.extend, producer="test", declared={"val_acc"}, interval_s=0.01)
    try:
        with pytest.raises(UndeclaredMetric, match="'custom'") as caught:
            sender.add([MetricPoint("val_acc", 0.5, 0, 0, 1), MetricPoint("custom", 1.0, 0, 0, 1)])
        assert caught.value.code == "UNDECLARED_METRIC"
        assert sender.pending == 0
        sender.add([MetricPoint("val_acc", 0.6, 1, 0, 2)])
    finally:
        assert sender.close(5)
    assert [p.key for e in sent for p in e.event.points()] == ["val_acc"]  # type: ignore[attr-defined]
