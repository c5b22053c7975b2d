"""submit and cancel against a real nats-server: the events appended, their order, payloads and guards."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mlhub.errors import InvalidInput
from mlhub.eventlog import EventLog
from mlhub.events import (
    ConfigSnapshotted,
    Envelope,
    ExperimentCreated,
    JobCancelled,
    JobFailed,
    JobQueued,
    JobStarted,
    JobSucceeded,
    RunCancelled,
    RunCreated,
    SeedRecorded,
    TagsSet,
    sha256_of,
)
from mlhub.scheduler import (
    ExperimentConfig,
    JobAlreadyEnded,
    JobNotFound,
    cancel,
    experiment_id_for,
    load_config,
    submit,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BASE: dict[str, Any] = {"experiment": "exp", "plugin": "digits-mlp", "data": {"name": "sklearn-digits"}}


def config(**changes: Any) -> ExperimentConfig:
    return ExperimentConfig.model_validate({**BASE, **changes})


async def test_submit_appends_the_run_then_job_queued_with_resolved_payloads(event_log: EventLog) -> None:
    loaded = load_config(CONFIGS / "digits-mlp.yaml", ["trainer.max_epochs=2"])
    result = await submit(event_log, loaded.config, overrides=loaded.overrides, producer="test@host")
    snapshot = {**loaded.config.model_dump(mode="json")}
    assert result.seed == 42 and result.seed_source == "config" and snapshot["trainer"]["max_epochs"] == 2
    assert result.config_sha256 == sha256_of(snapshot) and result.experiment_id == "digits-baseline"
    assert result.experiment_created and result.seqs == (1, 2, 3, 4, 5, 6)

    run = await event_log.read_aggregate("run", result.run_id)
    job = await event_log.read_aggregate("job", result.job_id)
    experiment = await event_log.read_aggregate("experiment", "digits-baseline")
    assert [r.envelope.type for r in run.events] == [
        "run.created", "run.config_snapshotted", "run.seed_recorded", "run.tags_set"]
    assert [r.envelope.type for r in job.events] == ["job.queued"]
    # job.queued is the last event appended: the run is complete before any worker can see the job.
    assert job.events[0].seq == 6 > run.version == 5 and experiment.version == 1
    everything = [*experiment.events, *run.events, *job.events]
    assert {r.envelope.correlation_id for r in everything} == {result.job_id}
    assert {r.envelope.producer for r in everything} == {"test@host"}

    created, snapshotted, seeded, tagged = (r.envelope.event for r in run.events)
    assert created == RunCreated(run_id=result.run_id, experiment_id="digits-baseline", job_id=result.job_id,
                                 name=f"digits-mlp-{result.run_id[:8]}", source="job")
    assert isinstance(snapshotted, ConfigSnapshotted)
    assert snapshotted.config == snapshot and snapshotted.sha256 == sha256_of(snapshotted.config)
    assert snapshotted.overrides == ("trainer.max_epochs=2",)
    assert seeded == SeedRecorded(run_id=result.run_id, seed=42, source="config")
    assert tagged == TagsSet(run_id=result.run_id, tags={"task": "classification", "dataset": "digits"})
    assert job.events[0].envelope.event == JobQueued(
        job_id=result.job_id, run_id=result.run_id, experiment_id="digits-baseline", plugin="digits-mlp",
        pool="cpu", config=snapshot, config_sha256=result.config_sha256, timeout_s=900.0, max_attempts=2)
    assert experiment.events[0].envelope.event == ExperimentCreated(experiment_id="digits-baseline",
                                                                    name="digits-baseline")


async def test_a_drawn_seed_is_recorded_and_written_into_the_snapshot(event_log: EventLog) -> None:
    result = await submit(event_log, config(), producer="test", draw_seed=lambda: 123_456)
    assert result.seed == 123_456 and result.seed_source == "drawn"
    run = await event_log.read_aggregate("run", result.run_id)
    events = [r.envelope.event for r in run.events]
    assert [type(e) for e in events] == [RunCreated, ConfigSnapshotted, SeedRecorded]  # no tags: no tags_set
    snapshotted, seeded = events[1], events[2]
    assert isinstance(snapshotted, ConfigSnapshotted) and snapshotted.config["seed"] == 123_456
    assert seeded == SeedRecorded(run_id=result.run_id, seed=123_456, source="drawn")
    # The snapshot alone reproduces the run: validated again, it carries the seed and hashes the same.
    again = ExperimentConfig.model_validate(snapshotted.config)
    assert again.seed == 123_456 and sha256_of(again.model_dump(mode="json")) == snapshotted.sha256


async def test_the_default_seed_draw_gives_seeds_in_range(event_log: EventLog) -> None:
    seeds = {(await submit(event_log, config(), producer="test")).seed for _ in range(3)}
    assert len(seeds) == 3 and all(0 <= s < 2**32 for s in seeds)


async def test_the_experiment_is_created_once_across_submits(event_log: EventLog) -> None:
    name = "Digits: sweep #1"
    first, second = [await submit(event_log, config(experiment=name, seed=1), producer="test") for _ in range(2)]
    assert first.experiment_id == second.experiment_id == experiment_id_for(name)
    assert first.experiment_created and not second.experiment_created and first.run_id != second.run_id
    experiment = await event_log.read_aggregate("experiment", first.experiment_id)
    assert [r.envelope.event for r in experiment.events] == [
        ExperimentCreated(experiment_id=first.experiment_id, name=name)]
    assert len(second.seqs) == 4  # run.created, config, seed, job.queued


async def test_concurrent_first_submits_create_the_experiment_once(event_log: EventLog) -> None:
    results = await asyncio.gather(*(submit(event_log, config(seed=3), producer="test") for _ in range(4)))
    assert sum(r.experiment_created for r in results) == 1
    assert len((await event_log.read_aggregate("experiment", "exp")).events) == 1


async def test_an_experiment_id_taken_by_another_name_is_refused(event_log: EventLog) -> None:
    await event_log.append(Envelope(event=ExperimentCreated(experiment_id="exp", name="something else"),
                                    producer="sdk"), expected_version=0)
    before = await event_log.last_sequence()
    with pytest.raises(InvalidInput, match="experiment id 'exp' belongs to the experiment named 'something else'"):
        await submit(event_log, config(), producer="test")
    assert await event_log.last_sequence() == before


async def test_cancel_a_queued_job(event_log: EventLog) -> None:
    result = await submit(event_log, config(seed=1), producer="test")
    cancelled = await cancel(event_log, result.job_id, "wrong config", "ana", producer="test")
    assert cancelled.previous_status == "queued"
    job = await event_log.read_aggregate("job", result.job_id)
    assert job.version == cancelled.seq
    last = job.events[-1].envelope
    assert last.event == JobCancelled(job_id=result.job_id, reason="wrong config", requested_by="ana")
    assert last.correlation_id == result.job_id
    # No worker holds a queued job, so its run is cancelled too, in the same atomic batch, right after the job's.
    run = await event_log.read_aggregate("run", result.run_id)
    assert cancelled.run_seq == run.version == cancelled.seq + 1
    assert run.events[-1].envelope.event == RunCancelled(run_id=result.run_id, reason="wrong config",
                                                         ended_by="ana")
    assert run.events[-1].envelope.correlation_id == result.job_id


async def test_cancel_refuses_an_unknown_or_ended_job_and_appends_nothing(event_log: EventLog) -> None:
    with pytest.raises(JobNotFound, match="no job nope was ever queued") as info:
        await cancel(event_log, "nope")
    assert info.value.code == "JOB_NOT_FOUND"
    with pytest.raises(InvalidInput, match="not a valid id"):
        await cancel(event_log, "a.>")
    result = await submit(event_log, config(seed=1), producer="test")
    await cancel(event_log, result.job_id)
    before = await event_log.last_sequence()
    with pytest.raises(JobAlreadyEnded, match=r"has already ended \(cancelled\)") as ended:
        await cancel(event_log, result.job_id)
    assert ended.value.state == "cancelled" and ended.value.code == "INVALID_STATE"
    assert await event_log.last_sequence() == before


async def _append(event_log: EventLog, *events: Any) -> None:
    for event in events:
        await event_log.append(Envelope(event=event, producer="worker"))


async def test_cancel_follows_the_job_through_its_attempts(event_log: EventLog) -> None:
    done, retrying, failed = [await submit(event_log, config(seed=1, max_attempts=2), producer="t") for _ in range(3)]
    await _append(event_log, JobStarted(job_id=done.job_id, run_id=done.run_id, attempt=1, worker_id="w"),
                  JobSucceeded(job_id=done.job_id, attempt=1))
    with pytest.raises(JobAlreadyEnded, match="succeeded"):
        await cancel(event_log, done.job_id)
    # A retryable failure with attempts left puts the job back in the queue: it can still be cancelled.
    await _append(event_log, JobStarted(job_id=retrying.job_id, run_id=retrying.run_id, attempt=1, worker_id="w"),
                  JobFailed(job_id=retrying.job_id, attempt=1, error_type="OOM", error="", retryable=True))
    assert (await cancel(event_log, retrying.job_id)).previous_status == "queued"
    await _append(event_log, JobStarted(job_id=failed.job_id, run_id=failed.run_id, attempt=2, worker_id="w"),
                  JobFailed(job_id=failed.job_id, attempt=2, error_type="OOM", error="", retryable=True))
    with pytest.raises(JobAlreadyEnded, match=r"\(failed\)"):
        await cancel(event_log, failed.job_id)


async def test_a_running_job_can_be_cancelled(event_log: EventLog) -> None:
    result = await submit(event_log, config(seed=1), producer="t")
    await _append(event_log, JobStarted(job_id=result.job_id, run_id=result.run_id, attempt=1, worker_id="w"))
    cancelled = await cancel(event_log, result.job_id)
    assert cancelled.previous_status == "running" and cancelled.run_seq is None  # its worker ends the run
    run = await event_log.read_aggregate("run", result.run_id)
    assert "run.cancelled" not in [r.envelope.type for r in run.events]


async def test_racing_cancels_append_one_cancelled_event(event_log: EventLog) -> None:
    result = await submit(event_log, config(seed=1), producer="t")
    outcomes = await asyncio.gather(*(cancel(event_log, result.job_id) for _ in range(3)), return_exceptions=True)
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(isinstance(o, JobAlreadyEnded) for o in outcomes if isinstance(o, BaseException)), outcomes
    job = await event_log.read_aggregate("job", result.job_id)
    assert [r.envelope.type for r in job.events] == ["job.queued", "job.cancelled"]
    run = await event_log.read_aggregate("run", result.run_id)
    assert [r.envelope.type for r in run.events].count("run.cancelled") == 1
