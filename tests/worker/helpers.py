"""Helpers for the worker tests: tiny digits configs, an in-process worker, reading a run's events back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from mlhub.eventlog import EventLog
from mlhub.events import DomainEvent, JobCancelled, JobFailed, JobSucceeded
from mlhub.scheduler import SubmitResult, load_config, submit
from mlhub.settings import Settings
from mlhub.worker import Worker, WorkerConfig

ROOT = Path(__file__).resolve().parents[2]
#: Overrides that make configs/digits-mlp.yaml train in about a second on 2 CPU cores.
TINY = ("trainer.max_epochs=2", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=1")


async def submit_digits(event_log: EventLog, *overrides: str) -> SubmitResult:
    """Queue the example digits config made tiny (plus overrides)."""
    loaded = load_config(ROOT / "configs" / "digits-mlp.yaml", [*TINY, *overrides])
    return await submit(event_log, loaded.config, overrides=loaded.overrides, producer="test")


async def events_of(event_log: EventLog, aggregate: str, aggregate_id: str) -> list[DomainEvent]:
    """The events of one aggregate, oldest first."""
    return [r.envelope.event for r in (await event_log.read_aggregate(aggregate, aggregate_id)).events]


def job_ended(events: list[DomainEvent]) -> bool:
    """Whether a job's events end it (succeeded, failed without retry, cancelled)."""
    return any(isinstance(e, JobSucceeded | JobCancelled) or (isinstance(e, JobFailed) and not e.retryable)
               for e in events)


async def wait_for(event_log: EventLog, job_ids: list[str], timeout_s: float = 60.0) -> None:
    """Wait until every job ended."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = [job_ended(await events_of(event_log, "job", j)) for j in job_ids]
        if all(done):
            return
        assert time.monotonic() < deadline, f"jobs did not end in {timeout_s}s: {dict(zip(job_ids, done, strict=True))}"
        await asyncio.sleep(0.2)


class RunningWorker:
    """An in-process worker running as a task until `stop()`; system metrics every MLHUB_SYSTEM_METRICS_S (15 s
    unset), as `mlhub worker`, unless `system_metrics_s` is given."""

    def __init__(self, event_log: EventLog, data_dir: Path, **config: Any) -> None:
        defaults = {"ack_wait_s": 5.0, "system_metrics_s": Settings().system_metrics_s}
        self.worker = Worker.local(event_log, data_dir, WorkerConfig(**{**defaults, **config}))
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Worker:
        await self.worker.ensure_consumer()
        self.task = asyncio.create_task(self.worker.run(self.stop_event, fetch_timeout_s=0.3))
        return self.worker

    async def __aexit__(self, *exc: object) -> None:
        self.stop_event.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 60)
