"""Events of the job aggregate (subject mlhub.ev.job.<job_id>.*): queueing and execution on workers."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from mlhub.events.base import Attempt, DomainEvent, EntityId, Sha256Hex


class JobEvent(DomainEvent):
    """Base of events about one training job."""

    aggregate_type: ClassVar[str] = "job"
    aggregate_field: ClassVar[str] = "job_id"

    job_id: EntityId


class JobQueued(JobEvent):
    """A job was accepted: the plugin to run, on which pool, with which resolved config."""

    event_type: ClassVar[str] = "job.queued"

    run_id: EntityId
    experiment_id: EntityId
    plugin: str = Field(min_length=1, max_length=200)
    pool: Literal["cpu", "gpu"] = "cpu"
    config: dict[str, Any]
    config_sha256: Sha256Hex
    timeout_s: float | None = Field(default=None, gt=0)
    max_attempts: Attempt = 3


class JobStarted(JobEvent):
    """A worker took the job and started an attempt."""

    event_type: ClassVar[str] = "job.started"

    run_id: EntityId
    attempt: Attempt
    worker_id: str = Field(min_length=1, max_length=200)


class JobHeartbeat(JobEvent):
    """The worker running an attempt is alive."""

    event_type: ClassVar[str] = "job.heartbeat"

    attempt: Attempt
    worker_id: str = Field(min_length=1, max_length=200)
    progress: float | None = Field(default=None, ge=0, le=1)


class JobSucceeded(JobEvent):
    """The job's attempt ended successfully."""

    event_type: ClassVar[str] = "job.succeeded"

    attempt: Attempt


class JobFailed(JobEvent):
    """The job's attempt failed; retryable says whether another attempt may follow."""

    event_type: ClassVar[str] = "job.failed"

    attempt: Attempt
    error_type: str = Field(min_length=1, max_length=200)
    error: str = Field(max_length=20_000)
    retryable: bool = False


class JobCancelled(JobEvent):
    """The job was cancelled (by a user, or by its timeout)."""

    event_type: ClassVar[str] = "job.cancelled"

    reason: str = Field(default="", max_length=2000)
    requested_by: str | None = None
