"""The worker's view of one job, folded from the job aggregate's events (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mlhub.eventlog import Recorded
from mlhub.events import JobCancelled, JobFailed, JobQueued, JobStarted, JobSucceeded


@dataclass(frozen=True)
class JobView:
    """What a worker must know before it starts an attempt of a job.

    attempts: how many attempts were started (job.started events); open_attempt: the number of the last
    started attempt when no job.succeeded/job.failed closed it (its worker died or lost the job), else None.
    ended: the job will never run again (succeeded, cancelled, or failed without a retry left).
    """

    queued: JobQueued | None
    attempts: int
    open_attempt: int | None
    ended: bool
    cancelled: bool
    version: int

    @property
    def next_attempt(self) -> int:
        """The number the next attempt gets."""
        return self.attempts + 1

    def retry_left(self, attempt: int) -> bool:
        """Whether another attempt may follow a retryable failure of `attempt`."""
        max_attempts = self.queued.max_attempts if self.queued is not None else 1
        return attempt < max_attempts


def job_view(events: Sequence[Recorded], version: int) -> JobView:
    """Fold a job's events (oldest first) into a JobView; same rules as the scheduler's job_status."""
    queued: JobQueued | None = None
    attempts = 0
    open_attempt: int | None = None
    ended = cancelled = False
    for recorded in events:
        event = recorded.envelope.event
        if isinstance(event, JobQueued):
            queued = event
        elif isinstance(event, JobStarted):
            attempts = max(attempts, event.attempt)
            open_attempt = event.attempt
        elif isinstance(event, JobSucceeded):
            open_attempt, ended = None, True
        elif isinstance(event, JobFailed):
            open_attempt = None
            max_attempts = queued.max_attempts if queued is not None else 1
            ended = ended or not (event.retryable and event.attempt < max_attempts)
        elif isinstance(event, JobCancelled):
            ended = cancelled = True
    return JobView(queued=queued, attempts=attempts, open_attempt=open_attempt, ended=ended,
                   cancelled=cancelled, version=version)
