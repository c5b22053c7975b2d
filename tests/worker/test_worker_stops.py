"""Stopping a running job: cancel, timeout, and a worker shutting down (the job goes to another worker)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.worker.helpers import RunningWorker, events_of, submit_digits, wait_for

from mlhub.eventlog import EventLog
from mlhub.events import (
    ArtifactStored,
    JobCancelled,
    JobFailed,
    JobStarted,
    MetricsLogged,
    RunCancelled,
    RunFailed,
    RunFinished,
)
from mlhub.scheduler import cancel

LONG = ("trainer.max_epochs=200", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")


async def wait_training(event_log: EventLog, run_id: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(isinstance(e, MetricsLogged) for e in await events_of(event_log, "run", run_id)):
        assert time.monotonic() < deadline, "training did not start"
        await asyncio.sleep(0.05)


async def test_cancel_stops_the_trainer_and_cancels_the_run(event_log: EventLog, tmp_path: Path) -> None:
    job = await submit_digits(event_log, *LONG)
    async with RunningWorker(event_log, tmp_path, ack_wait_s=1.5) as worker:
        await wait_training(event_log, job.run_id)
        await cancel(event_log, job.job_id, "changed my mind", "tester")
        await wait_for(event_log, [job.job_id])
        while not worker.jobs_handled:
            await asyncio.sleep(0.05)
    assert worker.jobs_handled == [(job.job_id, "cancelled")]
    run = await events_of(event_log, "run", job.run_id)
    assert isinstance(run[-1], RunCancelled)
    assert not any(isinstance(e, RunFinished | ArtifactStored) for e in run)


async def test_a_job_past_its_timeout_is_stopped_and_failed(event_log: EventLog, tmp_path: Path) -> None:
    job = await submit_digits(event_log, *LONG, "timeout_s=1")
    async with RunningWorker(event_log, tmp_path, ack_wait_s=1.5) as worker:
        await wait_for(event_log, [job.job_id])
        while not worker.jobs_handled:
            await asyncio.sleep(0.05)
    assert worker.jobs_handled == [(job.job_id, "timeout")]
    job_events = await events_of(event_log, "job", job.job_id)
    (failed,) = [e for e in job_events if isinstance(e, JobFailed)]
    assert (failed.error_type, failed.retryable) == ("JobTimeout", False) and "timeout of 1 s" in failed.error
    assert not any(isinstance(e, JobCancelled) for e in job_events)
    run = await events_of(event_log, "run", job.run_id)
    assert isinstance(run[-1], RunFailed) and run[-1].error_type == "JobTimeout"
    assert not any(isinstance(e, RunFinished | ArtifactStored) for e in run)


async def test_stopping_worker_gives_the_job_to_another(event_log: EventLog, tmp_path: Path) -> None:
    job = await submit_digits(event_log, *LONG)
    async with RunningWorker(event_log, tmp_path, ack_wait_s=1.5) as first:
        await wait_training(event_log, job.run_id)
    assert first.jobs_handled == [(job.job_id, "abandoned")]
    async with RunningWorker(event_log, tmp_path, ack_wait_s=1.5) as second:
        await wait_for(event_log, [job.job_id])
    assert second.jobs_handled == [(job.job_id, "succeeded")]
    job_events = await events_of(event_log, "job", job.job_id)
    assert [e.attempt for e in job_events if isinstance(e, JobStarted)] == [1, 2]
    assert [(e.error_type, e.retryable) for e in job_events if isinstance(e, JobFailed)] == [("WorkerStopped", True)]
