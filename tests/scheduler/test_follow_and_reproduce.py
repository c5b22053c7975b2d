"""Waiting for a job and reproducing a run, against a real event log and a real in-process worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.worker.helpers import RunningWorker, submit_digits

from mlhub.eventlog import EventLog, Recorded
from mlhub.events import (
    Envelope,
    MetricsLogged,
    RunCreated,
    RunFinished,
    RunStarted,
)
from mlhub.scheduler import (
    JobNotFound,
    NotReproducible,
    RunNotFound,
    WaitTimeout,
    compare,
    fold_run,
    read_run,
    reproduce,
    wait_for_job,
)


async def test_wait_follows_the_job_to_its_end_and_reports_how_it_ended(event_log: EventLog, tmp_path: Path) -> None:
    ok = await submit_digits(event_log)
    bad = await submit_digits(event_log, "model.dropout=1.5")
    seen: list[str] = []
    async with RunningWorker(event_log, tmp_path):
        outcome = await wait_for_job(event_log, ok.job_id, timeout_s=60,
                                     on_event=lambda r: seen.append(r.envelope.type))
        failed = await wait_for_job(event_log, bad.job_id, timeout_s=60)
    assert (outcome.status, outcome.succeeded, outcome.attempts, outcome.error) == ("succeeded", True, 1, None)
    assert seen[0] == "job.queued" and "job.started" in seen and seen[-1] == "job.succeeded"
    assert (failed.status, failed.succeeded, failed.attempts) == ("failed", False, 1)
    assert failed.error is not None and failed.error.startswith("PluginConfigError: ")
    again = await wait_for_job(event_log, ok.job_id, timeout_s=5)  # an ended job returns at once
    assert again == outcome


async def test_wait_names_an_unknown_job_and_gives_up_after_its_timeout(event_log: EventLog) -> None:
    with pytest.raises(JobNotFound, match="no job nosuchjob was ever queued"):
        await wait_for_job(event_log, "nosuchjob")
    queued = await submit_digits(event_log)  # no worker: it stays queued
    expected = rf"job {queued.job_id} did not end within 0.5 s \(it is queued; it goes on\)"
    with pytest.raises(WaitTimeout, match=expected):
        await wait_for_job(event_log, queued.job_id, timeout_s=0.5)


async def test_a_reproduction_is_bit_identical_and_another_seed_is_not(event_log: EventLog, tmp_path: Path) -> None:
    original = await submit_digits(event_log)
    async with RunningWorker(event_log, tmp_path):
        await wait_for_job(event_log, original.job_id, timeout_s=60)
        source, again = await reproduce(event_log, original.run_id, producer="test")
        other = await submit_digits(event_log, "seed=7")
        for job in (again, other):
            assert (await wait_for_job(event_log, job.job_id, timeout_s=60)).succeeded

    assert (again.seed, again.config_sha256) == (original.seed, original.config_sha256)
    copy = await read_run(event_log, again.run_id)
    assert copy.reproduces_run_id == original.run_id and copy.snapshot == source.snapshot
    same = compare(source, copy)
    assert {"test_acc", "test_loss", "val_loss", "train_loss"} <= {m.key for m in same.metrics}
    assert same.all_match and same.same_data and same.same_config and same.problems() == []

    different = compare(source, await read_run(event_log, other.run_id))
    assert not different.all_match and not different.same_config and different.same_data
    assert any(not m.matches for m in different.metrics)
    assert any(p.startswith("test_loss: ") for p in different.problems())


async def test_what_cannot_be_reproduced_is_refused_and_nothing_is_appended(event_log: EventLog) -> None:
    with pytest.raises(RunNotFound, match="no run nosuchrun was ever created"):
        await reproduce(event_log, "nosuchrun", producer="test")
    sdk_run = RunCreated(run_id="sdkrun", experiment_id="e", name="n", source="sdk")
    await event_log.append(Envelope(event=sdk_run, producer="t"))
    before = await event_log.last_sequence()
    with pytest.raises(NotReproducible, match="run sdkrun has no config snapshot"):
        await reproduce(event_log, "sdkrun", producer="test")
    assert await event_log.last_sequence() == before


def test_only_the_last_attempts_metrics_are_final() -> None:
    def rec(seq: int, event: object) -> Recorded:
        return Recorded(seq, Envelope(event=event, producer="t"))  # type: ignore[arg-type]

    events = [
        rec(1, RunCreated(run_id="r", experiment_id="e", name="n")),
        rec(2, RunStarted(run_id="r", attempt=1)),
        rec(3, MetricsLogged.from_points("r", [("loss", 9.0, 0, 0, 1), ("only_first", 1.0, 0, 0, 1)])),
        rec(4, RunStarted(run_id="r", attempt=2)),
        rec(5, MetricsLogged.from_points("r", [("loss", 2.0, 0, 0, 2), ("loss", 1.0, 1, 0, 3)], attempt=2)),
        rec(6, RunFinished(run_id="r", attempt=2)),
        # A late batch of the abandoned first attempt (v3 says its attempt) is not final either.
        rec(7, MetricsLogged.from_points("r", [("loss", 0.5, 9, 0, 9)], attempt=1)),
    ]
    record = fold_run("r", events)
    assert record.status == "finished" and record.final_metrics == {"loss": 1.0}
    nan_a = fold_run("r", [*events[:4], rec(5, MetricsLogged.from_points("r", [("loss", float("nan"), 0, 0, 2)],
                                                                          attempt=2)), events[5]])
    assert compare(nan_a, nan_a).all_match is False  # no config snapshot: never "reproduced"
    assert [m.matches for m in compare(nan_a, nan_a).metrics] == [True]  # NaN matches NaN
