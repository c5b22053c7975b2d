"""Faults: a worker process killed mid-training; its job is redelivered and completes as attempt 2."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from tests.worker.helpers import RunningWorker, events_of, submit_digits, wait_for

from mlhub.eventlog import EventLog
from mlhub.events import Envelope, JobFailed, JobStarted, JobSucceeded, MetricsLogged, RunFinished, RunStarted

#: Long enough (in epochs) that the killed worker is surely still training when its first metrics arrive.
LONG = ("trainer.max_epochs=60", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1")


def start_worker_process(nats_url: str, data_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`mlhub worker` in a subprocess, on the test's NATS server."""
    env = {**os.environ, "MLHUB_NATS_URL": nats_url, "MLHUB_DATA_DIR": str(data_dir)}
    return subprocess.Popen([sys.executable, "-m", "mlhub.cli", "worker", "--ack-wait", "2", *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def wait_until(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_killed_worker_job_is_redelivered_and_completes_as_attempt_2(
    event_log: EventLog, nats_url: str, tmp_path: Path
) -> None:
    job = await submit_digits(event_log, *LONG)
    proc = start_worker_process(nats_url, tmp_path / "dead")
    try:
        async def training() -> bool:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            return any(isinstance(e, MetricsLogged) for e in await events_of(event_log, "run", job.run_id))

        await wait_until(training, 60, "the subprocess worker to start training")
        # The job trains in a process of the worker's fork server; the worker itself never maps torch.
        tree = psutil.Process(proc.pid).children(recursive=True)
        # The fork server, the job's process, and multiprocessing's resource tracker (of the fork server).
        training_tree = [p for p in tree if "resource_tracker" not in " ".join(p.cmdline())]
        assert len(tree) == 3 and len(training_tree) == 2, [p.cmdline() for p in tree]
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "libtorch" not in maps
        assert all("libtorch" in Path(f"/proc/{p.pid}/maps").read_text() for p in training_tree)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        _, alive = psutil.wait_procs(tree, timeout=10)
        assert alive == [], "the job's processes outlived their SIGKILLed worker"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not any(isinstance(e, JobSucceeded) for e in await events_of(event_log, "job", job.job_id))

    async with RunningWorker(event_log, tmp_path / "alive", ack_wait_s=2.0) as worker:
        await wait_for(event_log, [job.job_id], timeout_s=60)
    assert worker.jobs_handled == [(job.job_id, "succeeded")]
    job_events = await events_of(event_log, "job", job.job_id)
    started = [e for e in job_events if isinstance(e, JobStarted)]
    assert [s.attempt for s in started] == [1, 2] and started[1].worker_id == worker.config.worker_id
    (lost,) = [e for e in job_events if isinstance(e, JobFailed)]
    assert (lost.attempt, lost.error_type, lost.retryable) == (1, "WorkerLost", True)
    assert isinstance(job_events[-1], JobSucceeded) and job_events[-1].attempt == 2
    run = await events_of(event_log, "run", job.run_id)
    assert [e.attempt for e in run if isinstance(e, RunStarted)] == [1, 2]
    assert isinstance(run[-1], RunFinished) and run[-1].attempt == 2
    # Every metric batch says its attempt: the killed attempt's before the second run.started, then 2's.
    attempts, current = [], 0
    for e in run:
        if isinstance(e, RunStarted):
            current = e.attempt
        elif isinstance(e, MetricsLogged):
            attempts.append((current, e.attempt))
    assert {started for started, _ in attempts} == {1, 2} and all(a == b for a, b in attempts), attempts


async def test_a_worker_that_lost_its_job_does_not_record_a_late_success(event_log: EventLog, tmp_path: Path) -> None:
    """A worker presumed dead (its attempt closed as WorkerLost by the worker that took over) may still finish
    training: its success must not end the job, which now belongs to the next attempt."""
    job = await submit_digits(event_log, *LONG)
    async with RunningWorker(event_log, tmp_path, ack_wait_s=30.0) as worker:
        async def training() -> bool:
            return any(isinstance(e, MetricsLogged) for e in await events_of(event_log, "run", job.run_id))

        await wait_until(training, 120, "training to start")
        # What a worker taking over the redelivered job appends first (Worker.handle: open attempt -> WorkerLost).
        takeover = JobFailed(job_id=job.job_id, attempt=1, error_type="WorkerLost", error="presumed dead",
                             retryable=True)
        await event_log.append(Envelope(event=takeover, producer="test", correlation_id=job.job_id))

        async def handled() -> bool:
            return bool(worker.jobs_handled)

        await wait_until(handled, 240, "the first worker to finish training")  # 60 epochs: slow on a loaded machine
    assert worker.jobs_handled == [(job.job_id, "conflict")]
    assert not any(isinstance(e, JobSucceeded) for e in await events_of(event_log, "job", job.job_id))
    assert not any(isinstance(e, RunFinished) for e in await events_of(event_log, "run", job.run_id))
