"""Bounded jobs: each job runs in a process of its own with a memory limit, and is killed on cancel.

Real NATS, real Lightning on the digits plugin: a model too big for MLHUB_JOB_MEMORY_MB fails with
JOB_OUT_OF_MEMORY and the same worker trains the next (tiny) job, with system metrics sampled busily all along
(the worker samples the job's process from outside, so the job's budget is its own); a cancel ends a job within
5 s even while it is busy where Lightning cannot stop it (building a 60,000-layer model).

System points are the worker's measurements of a job's process and are recorded whatever way the job ends, so
"nothing of the run was stored" below means no *training* point. Every test passes with system metrics at any
interval (MLHUB_SYSTEM_METRICS_S sets the worker's, as for `mlhub worker`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psutil
import pytest
from tests.worker.helpers import RunningWorker, events_of, submit_digits, wait_for

from mlhub.eventlog import EventLog
from mlhub.events import (
    SYSTEM_METRIC_PREFIX,
    ArtifactStored,
    JobFailed,
    JobSucceeded,
    MetricsLogged,
    ParamsLogged,
    RunCancelled,
    RunFailed,
    RunFinished,
)
from mlhub.scheduler import cancel

#: Three 8192x8192 layers: 805 MB of float32 weights, past a budget of 512 MiB before the first batch.
TOO_BIG = ("model.hidden_sizes=[8192,8192,8192,8192]",)
#: 60,000 small layers: seconds of building the model, where no Lightning callback can stop it.
SLOW_TO_BUILD = ("model.hidden_sizes=[" + ",".join(["64"] * 60_000) + "]", "trainer.max_epochs=1")
#: Seconds between system samples in the memory test: many samples during both jobs, the tiny one included.
BUSY_SAMPLING_S = 0.2


def training_keys(run: list[object]) -> set[str]:
    """Keys of the run's stored points other than the worker's system metrics."""
    return {p.key for e in run if isinstance(e, MetricsLogged) for p in e.points()
            if not p.key.startswith(SYSTEM_METRIC_PREFIX)}


def system_points(run: list[object]) -> list[float]:
    """Values of the run's stored system/memory_mb points."""
    return [p.value for e in run if isinstance(e, MetricsLogged) for p in e.points()
            if p.key == f"{SYSTEM_METRIC_PREFIX}memory_mb"]


async def test_a_job_past_its_memory_limit_fails_with_job_out_of_memory_and_the_worker_takes_the_next(
        event_log: EventLog, tmp_path: Path) -> None:
    big = await submit_digits(event_log, *TOO_BIG)
    tiny = await submit_digits(event_log)
    # Before the worker sampled from outside, a sampler thread in the job's process spent that process's budget
    # (its stack and malloc arena: ~72 MiB of address space) and the tiny job's ONNX export failed to start its
    # threads (pthread_create: ENOMEM) under 512 MiB.
    async with RunningWorker(event_log, tmp_path, job_memory_mb=512, system_metrics_s=BUSY_SAMPLING_S) as worker:
        await wait_for(event_log, [big.job_id, tiny.job_id], timeout_s=180)
        while len(worker.jobs_handled) < 2:
            await asyncio.sleep(0.05)
    assert worker.jobs_handled == [(big.job_id, "failed"), (tiny.job_id, "succeeded")]
    (failed,) = [e for e in await events_of(event_log, "job", big.job_id) if isinstance(e, JobFailed)]
    assert (failed.error_type, failed.retryable) == ("JOB_OUT_OF_MEMORY", False)
    assert "memory limit of 512 MiB (MLHUB_JOB_MEMORY_MB)" in failed.error, failed.error
    run = await events_of(event_log, "run", big.run_id)
    assert isinstance(run[-1], RunFailed) and run[-1].error_type == "JOB_OUT_OF_MEMORY"
    assert not any(isinstance(e, RunFinished | ArtifactStored) for e in run) and not training_keys(run)
    # The next job ran under the same limit, in a fresh process, to the end, sampled all along.
    assert any(isinstance(e, JobSucceeded) for e in await events_of(event_log, "job", tiny.job_id))
    tiny_run = await events_of(event_log, "run", tiny.run_id)
    assert isinstance(tiny_run[-1], RunFinished)
    assert {e.kind for e in tiny_run if isinstance(e, ArtifactStored)} == {"checkpoint", "onnx"}
    steps = [p.step for e in tiny_run if isinstance(e, MetricsLogged) for p in e.points() if p.key == "train_loss"]
    assert steps == sorted(set(steps)) and steps, "each training point stored once"
    memory = system_points(tiny_run)
    total_mb = psutil.virtual_memory().total / 2**20
    assert memory and all(100 < mb < total_mb for mb in memory), memory  # torch alone is hundreds of MiB resident
    stored = sum(e.num_points for e in tiny_run if isinstance(e, MetricsLogged))
    assert stored == worker.results[tiny.job_id].points_logged, "system points counted and stored once"


async def test_cancel_kills_a_job_busy_where_lightning_cannot_stop_it_within_5_s(
        event_log: EventLog, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    job = await submit_digits(event_log, *SLOW_TO_BUILD)
    async with RunningWorker(event_log, tmp_path, ack_wait_s=30.0, job_memory_mb=4096) as worker:
        deadline = time.monotonic() + 120
        while not any(isinstance(e, ParamsLogged) for e in await events_of(event_log, "run", job.run_id)):
            assert time.monotonic() < deadline, "the job did not start"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # into build_module (60,000 layers take seconds)
        cancelled_at = time.monotonic()
        await cancel(event_log, job.job_id, "too big", "tester")
        while not worker.jobs_handled:
            assert time.monotonic() - cancelled_at < 30, "the cancelled job did not end"
            await asyncio.sleep(0.02)
        ended_after = time.monotonic() - cancelled_at
    print(f"\ncancel of a job building its model: ended {ended_after:.2f} s after the cancel")
    assert worker.jobs_handled == [(job.job_id, "cancelled")]
    assert ended_after < 5.0
    assert any("did not stop within 2 s of the stop request: killed" in r.getMessage() for r in caplog.records)
    run = await events_of(event_log, "run", job.run_id)
    assert isinstance(run[-1], RunCancelled)
    assert not any(isinstance(e, RunFinished | ArtifactStored) for e in run) and not training_keys(run)


async def test_a_job_process_killed_from_outside_fails_the_job_and_the_worker_goes_on(
        event_log: EventLog, tmp_path: Path) -> None:
    """What a cgroup's OOM killer (or an operator) does: SIGKILL of the job's process alone. The job fails with
    JobProcessDied, not retried; the worker records it and takes the next job."""
    import multiprocessing.forkserver
    import os
    import signal

    job = await submit_digits(event_log, "trainer.max_epochs=200", "trainer.limit_train_batches=2",
                              "trainer.limit_val_batches=1")
    after = await submit_digits(event_log)
    async with RunningWorker(event_log, tmp_path) as worker:
        deadline = time.monotonic() + 120
        while not any(isinstance(e, MetricsLogged) for e in await events_of(event_log, "run", job.run_id)):
            assert time.monotonic() < deadline, "the job did not start training"
            await asyncio.sleep(0.05)
        server_pid = multiprocessing.forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
        (job_process,) = psutil.Process(server_pid).children()
        os.kill(job_process.pid, signal.SIGKILL)
        await wait_for(event_log, [job.job_id, after.job_id], timeout_s=120)
        while len(worker.jobs_handled) < 2:
            await asyncio.sleep(0.05)
    assert worker.jobs_handled == [(job.job_id, "failed"), (after.job_id, "succeeded")]
    (failed,) = [e for e in await events_of(event_log, "job", job.job_id) if isinstance(e, JobFailed)]
    assert (failed.error_type, failed.retryable) == ("JobProcessDied", False)
    assert "killed by SIGKILL" in failed.error, failed.error
    run = await events_of(event_log, "run", job.run_id)
    assert isinstance(run[-1], RunFailed) and run[-1].error_type == "JobProcessDied"
