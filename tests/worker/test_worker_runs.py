"""A worker trains submitted jobs end to end: real NATS, real Lightning on the digits plugin (tiny limits)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from tests.worker.helpers import RunningWorker, events_of, submit_digits, wait_for

from mlhub.artifacts import LocalArtifactStore
from mlhub.eventlog import EventLog
from mlhub.events import (
    SYSTEM_METRIC_PREFIX,
    ArtifactStored,
    CodeVersionRecorded,
    DatasetVersionRecorded,
    EnvironmentRecorded,
    JobFailed,
    JobHeartbeat,
    JobStarted,
    JobSucceeded,
    MetricsLogged,
    ParamsLogged,
    RunFailed,
    RunFinished,
    RunStarted,
)
from mlhub.worker import artifacts_root


def final_metrics(events: list[object]) -> dict[str, float]:
    """Every metric's last value in a run's events."""
    last: dict[str, float] = {}
    for e in events:
        if isinstance(e, MetricsLogged):
            for p in e.points():
                last[p.key] = p.value
    return last


async def test_submitted_job_is_trained_and_recorded(event_log: EventLog, tmp_path: Path) -> None:
    job = await submit_digits(event_log)
    async with RunningWorker(event_log, tmp_path) as worker:
        await wait_for(event_log, [job.job_id])
    run = await events_of(event_log, "run", job.run_id)
    kinds = [type(e).__name__ for e in run]
    assert kinds[:3] == ["RunCreated", "ConfigSnapshotted", "SeedRecorded"]
    started = [e for e in run if isinstance(e, RunStarted)]
    assert [(s.attempt, s.worker_id) for s in started] == [(1, worker.config.worker_id)]
    assert isinstance(run[-1], RunFinished) and run[-1].attempt == 1
    (dataset,) = [e for e in run if isinstance(e, DatasetVersionRecorded)]
    assert dataset.name == "sklearn-digits" and dataset.num_examples == 1797
    (code,) = [e for e in run if isinstance(e, CodeVersionRecorded)]
    assert code.git_commit is not None and len(code.git_commit) == 40  # the tests run inside the repository
    assert (code.diff_sha256 is not None) == code.dirty
    (env,) = [e for e in run if isinstance(e, EnvironmentRecorded)]
    assert env.torch and env.lightning and env.python and len(env.packages_sha256) == 64
    (params,) = [e for e in run if isinstance(e, ParamsLogged)]
    assert params.params["model.lr"] == "0.001" and params.params["trainer.max_epochs"] == "2"
    assert params.params["seed"] == "42"

    batches = [e for e in run if isinstance(e, MetricsLogged)]
    points = [p for b in batches for p in b.points()]
    assert points and all(p.step >= 0 and p.epoch >= 0 and p.timestamp > 0 for p in points)
    keys = Counter(p.key for p in points)
    assert keys["train_loss"] == keys["val_loss"] == keys["val_acc"] == 2  # once per epoch, 2 epochs
    assert keys["test_acc"] == keys["test_loss"] == 1  # the final evaluation
    assert "epoch" not in keys  # the epoch travels on every point, not as a metric
    assert sorted({p.epoch for p in points}) == [0, 1]
    final = {p.key: p for p in points if p.key.startswith("test_")}
    # The last *training* step: the worker's system points (if the job ran past an interval) have time steps.
    training_steps = [p.step for p in points if not p.key.startswith(SYSTEM_METRIC_PREFIX)]
    assert final["test_acc"].step == max(training_steps) and final["test_acc"].epoch == 1
    assert worker.results[job.job_id].points_logged == len(points)  # every point stored exactly once

    artifacts = {e.kind: e for e in run if isinstance(e, ArtifactStored)}
    assert set(artifacts) == {"checkpoint", "onnx"}
    store = LocalArtifactStore(artifacts_root(tmp_path))
    for artifact in artifacts.values():
        verified = store.verify(artifact.sha256)
        assert verified.size_bytes == artifact.size_bytes > 0 and verified.uri == artifact.uri

    job_events = await events_of(event_log, "job", job.job_id)
    assert [type(e).__name__ for e in job_events if not isinstance(e, JobHeartbeat)] == \
        ["JobQueued", "JobStarted", "JobSucceeded"]
    assert any(isinstance(e, JobHeartbeat) for e in job_events)


@pytest.mark.parametrize(("override", "error_type"), [
    ("plugin=no-such-plugin", "PluginNotFound"),
    ("model.dropout=1.5", "PluginConfigError"),
])
async def test_plugin_error_fails_the_job_without_redelivery(
    event_log: EventLog, tmp_path: Path, override: str, error_type: str
) -> None:
    job = await submit_digits(event_log, override)
    async with RunningWorker(event_log, tmp_path, ack_wait_s=1.0) as worker:
        await wait_for(event_log, [job.job_id])
        await asyncio.sleep(2.5)  # past ack_wait: a redelivery would show up as a second handled message
    assert worker.jobs_handled == [(job.job_id, "failed")]
    run = await events_of(event_log, "run", job.run_id)
    failed = [e for e in run if isinstance(e, RunFailed)]
    assert len(failed) == 1 and failed[0].error_type == error_type and failed[0].error
    job_events = await events_of(event_log, "job", job.job_id)
    (job_failed,) = [e for e in job_events if isinstance(e, JobFailed)]
    assert job_failed.error_type == error_type and not job_failed.retryable and job_failed.attempt == 1
    assert sum(isinstance(e, JobStarted) for e in job_events) == 1
    assert not any(isinstance(e, JobSucceeded) for e in job_events)


async def test_job_of_the_other_pool_is_left_to_that_pool(event_log: EventLog, tmp_path: Path) -> None:
    job = await submit_digits(event_log, "pool=gpu")
    async with RunningWorker(event_log, tmp_path) as worker:
        for _ in range(50):
            if worker.jobs_handled:
                break
            await asyncio.sleep(0.1)
    assert worker.jobs_handled == [(job.job_id, "skipped")]
    job_events = await events_of(event_log, "job", job.job_id)
    assert [type(e).__name__ for e in job_events] == ["JobQueued"]
    # The gpu pool's own consumer still delivers it (here to a gpu worker without CUDA: auto -> cpu).
    async with RunningWorker(event_log, tmp_path, pool="gpu") as gpu_worker:
        await wait_for(event_log, [job.job_id])
    assert gpu_worker.jobs_handled == [(job.job_id, "succeeded")]
