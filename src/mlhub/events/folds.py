"""Pure folds over a run's events that several packages need to agree on (no I/O).

`final_metrics` is the one definition of a run's "final metrics", used by `mlhub reproduce` (scheduler) and the
registry's promotion gates, so a reproduction and a `reproduced: true` gate judge the same numbers.
`RunLifecycle` is the one fold of a run's status (the tracking service's checks, the reaper, `mlhub runs end`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from mlhub.events.base import DomainEvent
from mlhub.events.job import JobCancelled, JobFailed, JobQueued, JobStarted, JobSucceeded
from mlhub.events.run import (
    MetricsLogged,
    ParamsLogged,
    RunCancelled,
    RunCrashed,
    RunCreated,
    RunFailed,
    RunFinished,
    RunResumed,
    RunStarted,
)
from mlhub.events.status import RunStatus


@dataclass(frozen=True)
class RunLifecycle:
    """What a run's lifecycle events say: whether it exists, its status and attempt, where it came from, and
    its params (a param once logged keeps its value). Build it with `run_lifecycle(events)` or fold events in
    one at a time with `apply` (events of other types are ignored)."""

    created: bool = False
    status: RunStatus | None = None
    attempt: int = 1
    source: str | None = None
    experiment_id: str | None = None
    job_id: str | None = None
    #: The type of the event that ended the run (None while it has not ended).
    ended_by: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        """Whether the run has ended (a crashed run until it is resumed)."""
        return self.status is not None and self.status.ended

    def apply(self, event: DomainEvent) -> RunLifecycle:
        """The lifecycle after one more event of the run."""
        if isinstance(event, RunCreated):
            return replace(self, created=True, source=event.source, experiment_id=event.experiment_id,
                           job_id=event.job_id, status=self.status or RunStatus.QUEUED)
        if isinstance(event, RunStarted):
            return replace(self, status=RunStatus.RUNNING, attempt=event.attempt, ended_by=None)
        if isinstance(event, RunResumed):
            return replace(self, status=RunStatus.RUNNING, ended_by=None)
        if isinstance(event, ParamsLogged):
            return replace(self, params={**self.params, **event.params})
        ended = _ENDS.get(type(event))
        if ended is not None:
            attempt = getattr(event, "attempt", self.attempt)
            return replace(self, status=ended, attempt=attempt, ended_by=event.event_type)
        return self


_ENDS: dict[type[DomainEvent], RunStatus] = {
    RunFinished: RunStatus.FINISHED,
    RunFailed: RunStatus.FAILED,
    RunCancelled: RunStatus.KILLED,
    RunCrashed: RunStatus.CRASHED,
}


def run_lifecycle(events: Iterable[DomainEvent], start: RunLifecycle | None = None) -> RunLifecycle:
    """Fold a run's events (oldest first) into its lifecycle, from `start` (a fresh run when None)."""
    state = start or RunLifecycle()
    for event in events:
        state = state.apply(event)
    return state


def final_metrics(events: Iterable[DomainEvent]) -> dict[str, float]:
    """The final value of each metric key of a run, from its events oldest first.

    Only the last attempt counts (a `run.started` of a higher attempt starts over, and points of an earlier
    attempt that arrive later are not counted: an abandoned attempt's points are not final). Within it, a
    key's final value is its point with the highest (step, timestamp); of equal ones the later logged wins
    (the rule of the read model's `metric_summaries.last_value`). NaN stays NaN.
    """
    final: dict[str, float] = {}
    at: dict[str, tuple[int, int]] = {}
    attempt = 1
    for event in events:
        if isinstance(event, RunStarted):
            if event.attempt > attempt:  # a new attempt starts over (the read model's summaries do the same)
                final, at = {}, {}
            attempt = max(attempt, event.attempt)
        elif isinstance(event, MetricsLogged) and (event.attempt is None or event.attempt >= attempt):
            for series in event.series:
                best = at.get(series.key, (-1, -1))
                steps, stamps, values = series.steps, series.timestamps, series.values
                if all(b <= a for a, b in zip(steps[1:], steps, strict=False)) and best <= (steps[0], stamps[0]) \
                        and all(b <= a for a, b in zip(stamps[1:], stamps, strict=False)):
                    best, final[series.key] = (steps[-1], stamps[-1]), values[-1]  # in order: the last point
                else:
                    for value, step, ts in zip(values, steps, stamps, strict=True):
                        if (step, ts) >= best:
                            best, final[series.key] = (step, ts), value
                at[series.key] = best
    return final


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
#: Job states after which nothing more happens to a job.
ENDED_JOB_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


def job_status(events: Iterable[DomainEvent]) -> JobStatus | None:
    """A job's status from its events, oldest first (None when it was never queued); a retryable failure
    re-queues it while attempts are left."""
    status: JobStatus | None = None
    max_attempts = 1
    for event in events:
        if isinstance(event, JobQueued):
            status, max_attempts = "queued", event.max_attempts
        elif isinstance(event, JobStarted):
            status = "running"
        elif isinstance(event, JobSucceeded):
            status = "succeeded"
        elif isinstance(event, JobFailed):
            status = "queued" if event.retryable and event.attempt < max_attempts else "failed"
        elif isinstance(event, JobCancelled):
            status = "cancelled"
    return status
