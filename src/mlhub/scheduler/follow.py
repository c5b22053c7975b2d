"""Following a job until it ends (`mlhub submit --wait`, `mlhub reproduce --wait`).

The job's own events are read live from the log (an ordered consumer on the job's subjects), not from the read
model, so waiting needs no projector and sees every attempt as it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from mlhub.eventlog import EventLog, Recorded
from mlhub.events import (
    SUBJECT_PREFIX,
    JobCancelled,
    JobFailed,
    JobQueued,
    JobStarted,
    RunCancelled,
    RunCrashed,
    RunFailed,
    RunFinished,
    aggregate_subject_filter,
)
from mlhub.scheduler.errors import JobNotFound, WaitTimeout
from mlhub.scheduler.service import ENDED_STATES, JobStatus, job_status

#: How long to wait, after a job ended, for its run's end event.
RUN_END_WAIT_S = 30.0
#: The events that end a run (its status becomes finished, failed, killed or crashed).
RUN_END_EVENTS = (RunFinished, RunFailed, RunCancelled, RunCrashed)


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended: its final status, how many attempts started, and why it failed or was cancelled."""

    job_id: str
    status: JobStatus
    attempts: int
    #: "ErrorType: message" of the last failure, or the cancel reason; None for a success.
    error: str | None
    #: Stream sequence of the event that ended the job.
    seq: int

    @property
    def succeeded(self) -> bool:
        """Whether the job ended successfully."""
        return self.status == "succeeded"


async def wait_for_job(
    event_log: EventLog,
    job_id: str,
    *,
    timeout_s: float | None = None,
    on_event: Callable[[Recorded], None] | None = None,
) -> JobOutcome:
    """Follow the job's events until it ends; JobNotFound when it was never queued, WaitTimeout past timeout_s.

    on_event is called with every event of the job as it is read (for progress output). A job that already
    ended returns at once. It returns once the job's run has its end event as well, so the run reads as ended.
    """
    subject = aggregate_subject_filter("job", job_id)
    if await event_log.last_sequence(subject) == 0:
        raise JobNotFound(f"no job {job_id} was ever queued")
    events: list[Recorded] = []
    try:
        async with asyncio.timeout(timeout_s):
            async with contextlib.aclosing(event_log.replay(subject_filter=subject, follow=True)) as stream:
                async for recorded in stream:
                    events.append(recorded)
                    if on_event is not None:
                        on_event(recorded)
                    status = job_status(events)
                    if status in ENDED_STATES:
                        assert status is not None
                        break
            await _run_ended(event_log, events)
            assert status is not None
            return _outcome(job_id, status, events)
    except TimeoutError:
        status = job_status(events)
        raise WaitTimeout(f"job {job_id} did not end within {timeout_s:g} s (it is {status}; it goes on)") from None


async def _run_ended(event_log: EventLog, events: list[Recorded]) -> None:
    """Wait until the job's run has its end event too (run.finished/failed/cancelled/crashed).

    The job's end and its run's end are two appends (a worker records job.succeeded, guarded by the job's
    version, then run.finished), so a caller that reads the run right after the job ended must not see it
    still running. Polls the end subjects (never the run's metric events), RUN_END_WAIT_S at most.
    """
    queued = next((r.envelope.event for r in events if isinstance(r.envelope.event, JobQueued)), None)
    if queued is None:
        return
    subjects = [f"{SUBJECT_PREFIX}.run.{queued.run_id}.{end.event_name()}" for end in RUN_END_EVENTS]
    deadline = time.monotonic() + RUN_END_WAIT_S
    while time.monotonic() < deadline:  # a worker that died between the two appends leaves no run end
        for subject in subjects:
            if await event_log.last_event(subject) is not None:
                return
        await asyncio.sleep(0.05)


def _outcome(job_id: str, status: JobStatus, events: list[Recorded]) -> JobOutcome:
    attempts = max((r.envelope.event.attempt for r in events if isinstance(r.envelope.event, JobStarted)), default=0)
    error: str | None = None
    last = events[-1].envelope.event
    if isinstance(last, JobFailed):
        error = f"{last.error_type}: {last.error}"
    elif isinstance(last, JobCancelled):
        error = f"cancelled: {last.reason}" if last.reason else "cancelled"
    return JobOutcome(job_id=job_id, status=status, attempts=attempts, error=error, seq=events[-1].seq)
