"""Submitting and cancelling jobs.

`submit` turns a validated config into events: the experiment (once), then the run's provenance (created,
config snapshot, seed, tags) and last `job.queued`, so a worker never sees a job whose run is incomplete.
`cancel` appends `job.cancelled` to a job that has not ended, guarded by the job's version.

The scheduler knows a plugin name and a config, nothing about models.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from mlhub.errors import ConcurrencyError, InvalidInput
from mlhub.eventlog import EventLog, Recorded
from mlhub.events import (
    SUBJECT_PREFIX,
    ConfigSnapshotted,
    DomainEvent,
    Envelope,
    ExperimentCreated,
    JobCancelled,
    JobQueued,
    RunCancelled,
    RunCreated,
    SeedRecorded,
    TagsSet,
    aggregate_subject_filter,
    experiment_id_for,
    experiment_to_create,
    sha256_of,
)
from mlhub.events.folds import ENDED_JOB_STATES, JobStatus
from mlhub.events.folds import job_status as fold_job_status
from mlhub.scheduler.config import ExperimentConfig
from mlhub.scheduler.errors import JobAlreadyEnded, JobNotFound

__all__ = ["ENDED_STATES", "JobStatus", "SubmitResult", "CancelResult", "cancel", "experiment_event",
           "experiment_id_for", "job_status", "resolve_snapshot", "submit", "submit_snapshot"]

_ENTITY_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
#: Job states after which nothing more happens to a job.
ENDED_STATES = ENDED_JOB_STATES


@dataclass(frozen=True)
class SubmitResult:
    """What `submit` queued: the ids, the seed the run will use, the snapshot's hash and the sequences written."""

    job_id: str
    run_id: str
    experiment_id: str
    seed: int
    seed_source: Literal["config", "drawn"]
    config_sha256: str
    experiment_created: bool
    #: Stream sequences of the appended events, in order (experiment.created first when it was appended).
    seqs: tuple[int, ...]


@dataclass(frozen=True)
class CancelResult:
    """A cancelled job: its status before, and the stream sequences of its job.cancelled and run.cancelled."""

    job_id: str
    previous_status: JobStatus
    seq: int
    #: Sequence of the run.cancelled appended for a job that was not running; None for a running job (the
    #: worker running it ends its run).
    run_seq: int | None = None


def resolve_snapshot(config: ExperimentConfig, seed: int) -> dict[str, Any]:
    """The fully resolved config a run records: every default filled in and the seed it uses."""
    snapshot = config.model_dump(mode="json")
    snapshot["seed"] = seed
    return snapshot


async def submit(
    event_log: EventLog,
    config: ExperimentConfig,
    *,
    overrides: Sequence[str] = (),
    producer: str,
    draw_seed: Callable[[], int] = lambda: secrets.randbelow(2**32),
) -> SubmitResult:
    """Queue a job for a validated config; returns its ids, seed and config hash.

    overrides: the `--set` overrides already applied to config, recorded with the snapshot. A seed missing
    from config is drawn (draw_seed) and written into the snapshot, so re-running the snapshot reproduces it.
    Events are appended in order, each guarded by its aggregate's version; job.queued comes last.
    """
    seed_source: Literal["config", "drawn"] = "config" if config.seed is not None else "drawn"
    seed = config.seed if config.seed is not None else draw_seed()
    return await _queue(event_log, config, resolve_snapshot(config, seed), seed_source, overrides=overrides,
                        producer=producer)


async def submit_snapshot(
    event_log: EventLog,
    snapshot: dict[str, Any],
    *,
    overrides: Sequence[str] = (),
    producer: str,
    reproduces_run_id: str | None = None,
) -> SubmitResult:
    """Queue a job for a resolved snapshot exactly as recorded (a reproduction): same seed, same sha256.

    The snapshot must still validate as an ExperimentConfig with a seed (NotReproducible otherwise, naming the
    fields); it is queued as it is, never re-resolved, so defaults added to the schema since cannot change it.
    """
    from mlhub.scheduler.config import validate_config
    from mlhub.scheduler.errors import ConfigError, NotReproducible

    try:
        config = validate_config(snapshot, "recorded config snapshot")
    except ConfigError as e:
        raise NotReproducible(f"the recorded config snapshot no longer validates: {e}") from None
    if config.seed is None:
        raise NotReproducible("the recorded config snapshot has no seed")
    return await _queue(event_log, config, dict(snapshot), "config", overrides=overrides, producer=producer,
                        reproduces_run_id=reproduces_run_id)


async def _queue(
    event_log: EventLog,
    config: ExperimentConfig,
    snapshot: dict[str, Any],
    seed_source: Literal["config", "drawn"],
    *,
    overrides: Sequence[str],
    producer: str,
    reproduces_run_id: str | None = None,
) -> SubmitResult:
    """Append the experiment (once), the run's provenance and last job.queued for a resolved snapshot."""
    job_id, run_id = uuid.uuid4().hex, uuid.uuid4().hex
    seed = int(snapshot["seed"])
    config_sha256 = sha256_of(snapshot)
    experiment_id = experiment_id_for(config.experiment)

    def envelope(event: DomainEvent) -> Envelope:
        return Envelope(event=event, producer=producer, correlation_id=job_id)

    run_events: list[DomainEvent] = [
        RunCreated(run_id=run_id, experiment_id=experiment_id, name=f"{config.plugin}-{run_id[:8]}",
                   job_id=job_id, source="job", reproduces_run_id=reproduces_run_id),
        ConfigSnapshotted(run_id=run_id, config=snapshot, sha256=config_sha256, overrides=tuple(overrides)),
        SeedRecorded(run_id=run_id, seed=seed, source=seed_source),
    ]
    if config.tags:
        run_events.append(TagsSet(run_id=run_id, tags=dict(config.tags)))
    queued = JobQueued(
        job_id=job_id, run_id=run_id, experiment_id=experiment_id, plugin=config.plugin, pool=config.pool,
        config=snapshot, config_sha256=config_sha256, timeout_s=config.timeout_s, max_attempts=config.max_attempts,
    )
    # One atomic batch: the experiment (when new), the run's provenance and job.queued are stored together or
    # not at all, so no half-submitted job (a run without its job, an experiment without its run) is left.
    for _ in range(3):
        created = await experiment_event(event_log, experiment_id, config.experiment)
        events = ([created] if created is not None else []) + run_events + [queued]
        guards = {0: (aggregate_subject_filter("experiment", experiment_id), 0)} if created is not None else {}
        guards[len(events) - len(run_events) - 1] = (aggregate_subject_filter("run", run_id), 0)
        guards[len(events) - 1] = (aggregate_subject_filter("job", job_id), 0)
        try:
            results = await event_log.append_atomic([envelope(e) for e in events], guards=guards)
        except ConcurrencyError:
            if created is None:
                raise
            continue  # the experiment was created meanwhile: queue without creating it
        return SubmitResult(job_id=job_id, run_id=run_id, experiment_id=experiment_id, seed=seed,
                            seed_source=seed_source, config_sha256=config_sha256,
                            experiment_created=created is not None, seqs=tuple(r.seq for r in results))
    raise ConcurrencyError(f"experiment {experiment_id} kept changing while the job was submitted; retry")


async def experiment_event(event_log: EventLog, experiment_id: str, name: str) -> ExperimentCreated | None:
    """The experiment.created to append with a new run of experiment `name` (None when it exists); the
    scheduler and the tracking service both create experiments through this and `experiment_to_create`."""
    existing = await event_log.last_event(f"{SUBJECT_PREFIX}.experiment.{experiment_id}.created")
    return experiment_to_create(name, existing.envelope.event if existing is not None else None)


def job_status(events: Sequence[Recorded]) -> JobStatus | None:
    """A job's status from its recorded events (mlhub.events.job_status, the one fold of a job)."""
    return fold_job_status(r.envelope.event for r in events)


async def cancel(
    event_log: EventLog, job_id: str, reason: str = "", requested_by: str | None = None, *, producer: str = "mlhub"
) -> CancelResult:
    """Cancel a job that is queued or running; JobNotFound or JobAlreadyEnded (naming its state) otherwise.

    The append is guarded by the job's version; when another event of the job wins the race, the job is read
    again and the cancel retried once (it may have ended in between: then JobAlreadyEnded). A job that was
    queued has no worker to end its run, so its run is cancelled here too (run.cancelled, same reason); a
    worker appends job.started guarded by the job's version, so none can start the job after its cancel.
    """
    if not _ENTITY_ID.fullmatch(job_id):
        raise InvalidInput(f"job id {job_id!r} is not a valid id (letters, digits, '_' and '-', 1 to 128)")
    if len(reason) > 2000:
        raise InvalidInput(f"reason is {len(reason)} characters long; 2000 at most")
    for attempt in (1, 2):
        job = await event_log.read_aggregate("job", job_id)
        status = job_status(job.events)
        if status is None:
            raise JobNotFound(f"no job {job_id} was ever queued")
        if status in ENDED_STATES:
            raise JobAlreadyEnded(f"job {job_id} has already ended ({status}): nothing to cancel", state=status)
        event = JobCancelled(job_id=job_id, reason=reason, requested_by=requested_by)
        envelopes = [Envelope(event=event, producer=producer, correlation_id=job_id)]
        queued = next((r.envelope.event for r in job.events if isinstance(r.envelope.event, JobQueued)), None)
        if status == "queued" and queued is not None:
            # No worker holds a queued job: its run is ended here, in the same atomic batch as the cancel.
            run_event = RunCancelled(run_id=queued.run_id, reason=reason, ended_by=requested_by)
            envelopes.append(Envelope(event=run_event, producer=producer, correlation_id=job_id))
        try:
            results = await event_log.append_atomic(
                envelopes, guards={0: (aggregate_subject_filter("job", job_id), job.version)})
        except ConcurrencyError:
            if attempt == 2:
                raise
            continue
        return CancelResult(job_id=job_id, previous_status=status, seq=results[0].seq,
                            run_seq=results[1].seq if len(results) > 1 else None)
    raise AssertionError("unreachable")  # pragma: no cover
