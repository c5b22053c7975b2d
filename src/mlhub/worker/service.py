"""The worker: takes queued jobs of its pool from a shared durable pull consumer and runs them.

Consumption: one durable pull consumer per pool (`mlhub-worker-cpu`, `mlhub-worker-gpu`) on
`mlhub.ev.job.*.queued`, shared by every worker of the pool. A subject cannot say the pool, so each pool's
consumer sees every queued job and a worker acks (skips) the jobs of the other pool: the other pool's own
consumer delivers them to its workers. Explicit acks, `ack_wait_s`, `max_deliver`; while a job runs the worker
calls `msg.in_progress()` every ack_wait/3 seconds, so only a dead worker's job is redelivered.

Per job: read the job aggregate; skip (ack) a job that ended or was cancelled. A started attempt that no
job.succeeded/job.failed closed belongs to a worker that died: it is recorded as `job.failed` (retryable,
error_type "WorkerLost") before the new attempt. `job.started` is appended guarded by the job's version (a
cancel or another worker in between makes it fail; the job is read again and decided again), then
`run.started` with the attempt number. Every outcome closes the attempt with one job event appended guarded by
the job's version, while the attempt is still the open one: a worker presumed dead (its attempt was closed
as WorkerLost, or the job was cancelled or ended meanwhile) records nothing more, so a job never ends twice.
Outcomes: success -> job.succeeded + run.finished, ack; plugin error -> job.failed (not retryable) + run.failed,
term; cancel -> run.cancelled, ack; timeout -> job.failed (error_type "JobTimeout", not retryable) + run.failed,
ack; worker shutdown -> job.failed (retryable, "WorkerStopped"), nak.
A retryable failure of the last allowed attempt ends the job: run.failed is appended too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nats.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from mlhub.artifacts import ArtifactStore, LocalArtifactStore
from mlhub.errors import ConcurrencyError, EventDecodeError, EventLogUnavailable
from mlhub.eventlog import STREAM_NAME, EventLog, declared_metric_names, worker_consumer_name
from mlhub.events import (
    SUBJECT_PREFIX,
    DomainEvent,
    Envelope,
    JobFailed,
    JobHeartbeat,
    JobQueued,
    JobStarted,
    JobSucceeded,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunStarted,
    decode,
)
from mlhub.settings import DEFAULT_SYSTEM_METRICS_S
from mlhub.worker.jobprocess import JobLimits, run_job_process, warm_up
from mlhub.worker.state import JobView, job_view
from mlhub.worker.training import TrainingContext, TrainingResult

log = logging.getLogger(__name__)

#: The subject of every queued job.
QUEUED_SUBJECTS = f"{SUBJECT_PREFIX}.job.*.queued"
#: How often a running job is checked for a cancel and its timeout (seconds): a cancel stops it this soon, plus
#: the job process's kill grace.
STOP_CHECK_S = 0.5
#: How many of its latest jobs a worker remembers (jobs_handled, results): a long-lived worker holds no more.
HISTORY_KEPT = 100
Pool = Literal["cpu", "gpu"]
Outcome = Literal["succeeded", "failed", "cancelled", "timeout", "abandoned", "skipped", "conflict"]


def consumer_name(pool: str) -> str:
    """The durable consumer a pool's workers share (the worker role's NATS permissions name it)."""
    return worker_consumer_name(pool)


def _backoff(pause: float) -> float:
    """The next wait after another failure of the event log: 0.25 s, doubling, at most 5 s."""
    return min(5.0, max(0.25, pause * 2))


def default_worker_id() -> str:
    """host-pid-random: unique per worker process."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def artifacts_root(data_dir: Path) -> Path:
    """Where the worker's local artifact store lives: `<data_dir>/artifacts`."""
    return data_dir / "artifacts"


@dataclass(frozen=True)
class WorkerConfig:
    """A worker's settings; the consumer settings are applied to the pool's shared consumer on start."""

    pool: Pool = "cpu"
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    #: Seconds between job.heartbeat events (in_progress acks are sent every ack_wait_s / 3).
    heartbeat_event_s: float = 10.0
    worker_id: str = field(default_factory=default_worker_id)
    producer: str = "mlhub-worker"
    code_dir: Path | None = None
    metric_interval_s: float = 0.5
    #: "reject": a run that logs a key no metric.defined event declares fails with UNDECLARED_METRIC.
    undeclared_metrics: Literal["keep", "reject"] = "keep"
    #: Memory a job's process may use beyond torch's and lightning's own (MiB, RLIMIT_AS; None: no limit);
    #: past it the job fails with JOB_OUT_OF_MEMORY (MLHUB_JOB_MEMORY_MB, see mlhub.worker.jobprocess).
    job_memory_mb: int | None = None
    #: Seconds a job's process gets to stop after a cancel, timeout or shutdown before it is killed.
    job_kill_grace_s: float = 2.0
    #: Seconds between system-metric samples of a job's process, taken from this process (MLHUB_SYSTEM_METRICS_S,
    #: mlhub.worker.jobsystem); 0: none.
    system_metrics_s: float = DEFAULT_SYSTEM_METRICS_S


class Worker:
    """Consumes queued jobs of one pool and runs them one at a time, each in a process of its own
    (mlhub.worker.jobprocess), served by a thread of the worker."""

    def __init__(self, event_log: EventLog, store: ArtifactStore, config: WorkerConfig | None = None) -> None:
        self.log = event_log
        self.store = store
        self.config = config or WorkerConfig()
        #: The outcome of each job message handled, oldest first: the last HISTORY_KEPT (for tools and tests).
        self.jobs_handled: list[tuple[str, Outcome]] = []
        #: How many job messages were handled since the worker started (all of them).
        self.messages_handled = 0
        #: The TrainingResult of each attempt that ran to the end, by job id: the last HISTORY_KEPT.
        self.results: dict[str, TrainingResult] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlhub-train")
        self._current_stop: Any = None
        #: Set when the worker is told to stop while a job is being handled: an attempt that starts after it (its
        #: job.started was appended, its stop hook not yet set) stops at once instead of training to the end.
        self._shutdown_requested = False

    @classmethod
    def local(cls, event_log: EventLog, data_dir: Path, config: WorkerConfig | None = None,
              store: ArtifactStore | None = None) -> Worker:
        """A worker storing artifacts in `store` (the configured one), else the local store `<data_dir>/artifacts`."""
        return cls(event_log, store or LocalArtifactStore(artifacts_root(data_dir)), config)

    async def ensure_consumer(self) -> None:
        """Create the pool's durable consumer, or update it to this worker's settings."""
        cfg = ConsumerConfig(
            durable_name=consumer_name(self.config.pool), filter_subject=QUEUED_SUBJECTS,
            ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=self.config.ack_wait_s,
            max_deliver=self.config.max_deliver, max_ack_pending=1000,
        )
        await self.log.js.add_consumer(STREAM_NAME, cfg)

    async def run(self, stop: asyncio.Event, *, finish_current: bool = False, fetch_timeout_s: float = 1.0) -> None:
        """Take and run jobs until `stop` is set; then the running job is abandoned (nak: another worker takes
        it), or finished first when finish_current."""
        await self.ensure_consumer()
        _warm_up()  # from this (the loop's) thread: the fork server imports torch while the worker waits for a job
        sub = await self.log.js.pull_subscribe_bind(durable=consumer_name(self.config.pool), stream=STREAM_NAME)
        pause = 0.0  # after a failed fetch or job: grows to 5 s while the event log keeps failing
        try:
            while not stop.is_set():
                if pause:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), pause)
                try:
                    msgs = await sub.fetch(1, timeout=fetch_timeout_s)
                except TimeoutError:  # nats.errors.TimeoutError derives from it
                    pause = 0.0
                    continue
                except nats.errors.Error as e:
                    # A cluster without a leader for the stream or consumer (an election after a node was lost:
                    # 503 / no responders), a connection being re-established: wait and fetch again. The
                    # consumer is durable and replicated; a job taken meanwhile is redelivered after its ack wait.
                    pause = _backoff(pause)
                    log.warning("worker %s: fetching from the pool's consumer failed (%s: %s); again in %.2g s",
                                self.config.worker_id, type(e).__name__, e, pause)
                    continue
                pause = 0.0
                for msg in msgs:
                    handling = asyncio.create_task(self.handle(msg))
                    stopper = asyncio.create_task(stop.wait())
                    await asyncio.wait({handling, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    if not handling.done() and not finish_current:
                        self._shutdown_requested = True
                        if self._current_stop is not None:
                            self._current_stop("shutdown")
                    try:
                        await handling
                    except (EventLogUnavailable, nats.errors.Error) as e:
                        # The log failed while the job was being decided or recorded (past every retry of the
                        # append): nothing half-done stays, as each event is appended whole or not at all, and
                        # the message, not acknowledged, comes back after its ack wait to whichever worker decides
                        # again from the job's events. This worker lives on and takes the next job.
                        pause = _backoff(pause)
                        log.error("worker %s: job message %s left to its redelivery: the event log failed (%s: %s)",
                                  self.config.worker_id, msg.subject, type(e).__name__, e)
                    finally:
                        stopper.cancel()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            self._executor.shutdown(wait=False)

    async def handle(self, msg: Any) -> Outcome:
        """Decide about one delivered job.queued message and run the job when it is ours to run."""
        try:
            envelope = decode(msg.data)
        except EventDecodeError as e:
            log.error("undecodable queued message on %s: %s", msg.subject, e)
            await msg.term()
            return self._done("?", "skipped")
        job = envelope.event
        if not isinstance(job, JobQueued) or job.pool != self.config.pool:
            await msg.ack()  # the other pool's consumer delivers it to that pool's workers
            return self._done(getattr(job, "job_id", "?"), "skipped")
        for _ in range(5):
            aggregate = await self.log.read_aggregate("job", job.job_id)
            view = job_view(aggregate.events, aggregate.version)
            if view.ended:
                await msg.ack()
                return self._done(job.job_id, "skipped")
            try:
                if view.open_attempt is not None:  # its worker died: close that attempt first
                    await self._attempt_failed(view, job, view.open_attempt, "WorkerLost",
                                               "the worker running this attempt stopped responding; the job "
                                               "was redelivered", retryable=True, expected_version=view.version)
                    continue
                started = JobStarted(job_id=job.job_id, run_id=job.run_id, attempt=view.next_attempt,
                                     worker_id=self.config.worker_id)
                await self._append(started, job, expected_version=view.version)
            except ConcurrencyError:
                continue  # something happened to the job meanwhile (cancel, another worker): decide again
            return await self._run_attempt(msg, job, view.next_attempt)
        await msg.nak(delay=1)
        return self._done(job.job_id, "conflict")

    async def _run_attempt(self, msg: Any, job: JobQueued, attempt: int) -> Outcome:
        await self._append(RunStarted(run_id=job.run_id, attempt=attempt, worker_id=self.config.worker_id), job)
        loop = asyncio.get_running_loop()
        deadline = self.log.append_deadline_s + 30

        def publish(event: DomainEvent) -> None:
            asyncio.run_coroutine_threadsafe(self._append(event, job), loop).result(deadline)

        def send_metrics(envelopes: Any) -> None:
            asyncio.run_coroutine_threadsafe(self.log.append_many(envelopes), loop).result(deadline)

        ctx = TrainingContext(job=job, attempt=attempt, pool=self.config.pool, producer=self.config.producer,
                              publish=publish, send_metrics=send_metrics, store=self.store,
                              code_dir=self.config.code_dir, metric_interval_s=self.config.metric_interval_s,
                              system_metrics_s=self.config.system_metrics_s)
        if self.config.undeclared_metrics == "reject":
            ctx.declared_metrics = await declared_metric_names(self.log)
        reason: list[str] = []

        def request_stop(why: str) -> None:
            if not reason:
                reason.append(why)
            ctx.stop.set()

        self._current_stop = request_stop
        if self._shutdown_requested:  # the stop came between job.started and here: give the job back now
            request_stop("shutdown")
        limits = JobLimits(memory_mb=self.config.job_memory_mb, kill_grace_s=self.config.job_kill_grace_s)
        training = loop.run_in_executor(self._executor, run_job_process, ctx, limits)
        keepalive = asyncio.create_task(self._keep_alive(msg, job, attempt, training, request_stop))
        failure: Exception | None = None
        try:
            result: TrainingResult | None = await training
        except EventLogUnavailable as e:
            log.error("job %s: event log unavailable during the run (%s); leaving it to another attempt", job.job_id, e)
            await _quietly(msg.nak(delay=self.config.ack_wait_s))
            return self._done(job.job_id, "abandoned")
        except Exception as e:  # a plugin or training error: record it (below), never retry the same config
            result, failure = None, e
        finally:  # heartbeats stop first: they would move the job's version under the guarded append below
            self._current_stop = None
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive
        if result is None:
            assert failure is not None
            return await self._failed(msg, job, attempt, failure)
        self._remember(job.job_id, result)
        if result.stopped:
            return await self._stopped(msg, job, attempt, reason[0] if reason else "shutdown")
        lost = await self._close_attempt(job, attempt, JobSucceeded(job_id=job.job_id, attempt=attempt))
        if lost is not None:
            return await self._lost(msg, job, lost)
        await self._append(RunFinished(run_id=job.run_id, attempt=attempt), job)
        await msg.ack()
        return self._done(job.job_id, "succeeded")

    async def _failed(self, msg: Any, job: JobQueued, attempt: int, failure: Exception) -> Outcome:
        """Record a plugin or training error: job.failed (not retryable) while the attempt is still the job's
        open one, then run.failed; a worker that lost the job records nothing."""
        # A job process's own failures (JOB_OUT_OF_MEMORY, JobProcessDied, an unpicklable error) name their type.
        error_type = getattr(failure, "job_error_type", None) or type(failure).__name__
        error = str(failure)[:19_000] or repr(failure)[:19_000]
        log.warning("job %s attempt %d failed: %s: %s", job.job_id, attempt, error_type, error)
        failed = JobFailed(job_id=job.job_id, attempt=attempt, error_type=error_type, error=error, retryable=False)
        lost = await self._close_attempt(job, attempt, failed)
        if lost is not None:
            return await self._lost(msg, job, lost)
        await self._append(RunFailed(run_id=job.run_id, attempt=attempt, error_type=error_type, error=error), job)
        await msg.term()
        return self._done(job.job_id, "failed")

    async def _lost(self, msg: Any, job: JobQueued, view: JobView) -> Outcome:
        """An attempt that lost its job ends quietly. The job's message now belongs to whoever took over: ack
        only when the job has ended anyway, else leave it to its ack wait so a live worker (or a redelivery)
        decides."""
        if view.ended:
            await msg.ack()
        return self._done(job.job_id, "conflict")

    async def _close_attempt(self, job: JobQueued, attempt: int, event: JobSucceeded | JobFailed) -> JobView | None:
        """Append the event that closes `attempt` (job.succeeded or job.failed), guarded by the job's version;
        the job's view, and nothing appended, when the attempt had lost the job.

        A worker presumed dead (its in_progress acks stopped long enough for a redelivery) may still finish or
        fail: by then its attempt was closed as WorkerLost, or the job was cancelled or ended by another
        attempt. Its outcome is then not recorded, so a job never ends twice. Only this worker's own
        heartbeats can move the version in between; a conflict re-reads the job and decides again.
        """
        for _ in range(5):
            aggregate = await self.log.read_aggregate("job", job.job_id)
            view = job_view(aggregate.events, aggregate.version)
            if view.ended or view.open_attempt != attempt:
                log.warning("job %s attempt %d ended after it lost the job (ended=%s, open attempt %s); its %s is "
                            "not recorded", job.job_id, attempt, view.ended, view.open_attempt, event.event_type)
                return view
            try:
                await self._append(event, job, expected_version=view.version)
                return None
            except ConcurrencyError:
                continue
        raise ConcurrencyError(f"job {job.job_id}: could not record {event.event_type} of attempt {attempt} "
                               f"after 5 tries")

    async def _stopped(self, msg: Any, job: JobQueued, attempt: int, why: str) -> Outcome:
        """Record how a stopped attempt ended: cancelled, timed out, or abandoned by a stopping worker."""
        if why == "cancelled":
            await self._append(RunCancelled(run_id=job.run_id, reason="job cancelled"), job)
            await msg.ack()
            return self._done(job.job_id, "cancelled")
        if why == "timeout":  # the job failed (not retryable: the same config would time out again)
            error = f"the run exceeded its timeout of {job.timeout_s:g} s and was stopped"
            lost = await self._close_attempt(job, attempt, JobFailed(
                job_id=job.job_id, attempt=attempt, error_type="JobTimeout", error=error, retryable=False))
            if lost is not None:
                return await self._lost(msg, job, lost)
            await self._append(RunFailed(run_id=job.run_id, attempt=attempt, error_type="JobTimeout", error=error),
                               job)
            await msg.ack()
            return self._done(job.job_id, "timeout")
        aggregate = await self.log.read_aggregate("job", job.job_id)
        view = job_view(aggregate.events, aggregate.version)
        await self._attempt_failed(view, job, attempt, "WorkerStopped", "the worker was stopped during the run",
                                   retryable=True)
        await msg.nak(delay=0)
        return self._done(job.job_id, "abandoned")

    async def _attempt_failed(self, view: JobView, job: JobQueued, attempt: int, error_type: str, error: str, *,
                              retryable: bool, expected_version: int | None = None) -> None:
        """Append job.failed for an attempt; when no retry is left, the run ends too (run.failed)."""
        last = not (retryable and view.retry_left(attempt))
        await self._append(JobFailed(job_id=job.job_id, attempt=attempt, error_type=error_type, error=error,
                                     retryable=retryable), job, expected_version=expected_version)
        if last:
            await self._append(RunFailed(run_id=job.run_id, attempt=attempt, error_type=error_type, error=error), job)

    async def _keep_alive(self, msg: Any, job: JobQueued, attempt: int, training: Any, request_stop: Any) -> None:
        """While training runs: in_progress every ack_wait/3, job.heartbeat events, cancel and timeout checks
        every STOP_CHECK_S."""
        started = time.monotonic()
        last_event = last_ack = started
        tick = max(0.1, self.config.ack_wait_s / 3)
        cancelled_subject = f"{SUBJECT_PREFIX}.job.{job.job_id}.cancelled"
        await self._append(JobHeartbeat(job_id=job.job_id, attempt=attempt, worker_id=self.config.worker_id), job)
        while not training.done():
            await asyncio.sleep(min(tick, STOP_CHECK_S))
            try:
                if time.monotonic() - last_ack >= tick:
                    last_ack = time.monotonic()
                    await msg.in_progress()
                if await self.log.last_event(cancelled_subject) is not None:
                    request_stop("cancelled")
                elif job.timeout_s is not None and time.monotonic() - started > job.timeout_s:
                    request_stop("timeout")
                if time.monotonic() - last_event >= self.config.heartbeat_event_s:
                    last_event = time.monotonic()
                    await self._append(JobHeartbeat(job_id=job.job_id, attempt=attempt,
                                                    worker_id=self.config.worker_id), job)
            except Exception as e:  # keep training whatever the event log does; try again next tick
                log.warning("job %s: heartbeat failed: %r", job.job_id, e)

    async def _append(self, event: DomainEvent, job: JobQueued, *, expected_version: int | None = None) -> int:
        envelope = Envelope(event=event, producer=self.config.producer, correlation_id=job.job_id)
        return (await self.log.append(envelope, expected_version=expected_version)).seq

    def _remember(self, job_id: str, result: TrainingResult) -> None:
        self.results.pop(job_id, None)  # a redelivered job's newest result is the latest entry
        self.results[job_id] = result
        for old in list(self.results)[:-HISTORY_KEPT]:
            del self.results[old]

    def _done(self, job_id: str, outcome: Outcome) -> Outcome:
        self.jobs_handled.append((job_id, outcome))
        del self.jobs_handled[:-HISTORY_KEPT]
        self.messages_handled += 1
        log.info("job %s: %s", job_id, outcome)
        return outcome


def _warm_up() -> None:
    try:
        warm_up()
    except Exception as e:  # the first job starts it again and reports what fails
        log.warning("the job fork server did not start: %r", e)


async def _quietly(awaitable: Any) -> None:
    with contextlib.suppress(Exception):
        await awaitable
