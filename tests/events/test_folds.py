"""final_metrics: the one definition of a run's final metric values (reproduce and registry gates share it)."""

from __future__ import annotations

import math

from mlhub.events import (
    MetricsLogged,
    ParamsLogged,
    RunCancelled,
    RunCrashed,
    RunCreated,
    RunFinished,
    RunResumed,
    RunStarted,
    RunStatus,
    final_metrics,
    run_lifecycle,
)


def batch(*points: tuple[str, float, int, int], attempt: int | None = 1) -> MetricsLogged:
    return MetricsLogged.from_points("r", [(k, v, step, 0, ts) for k, v, step, ts in points]).model_copy(
        update={"attempt": attempt})


def test_the_highest_step_then_timestamp_wins_and_a_later_event_wins_a_tie() -> None:
    events = [
        RunCreated(run_id="r", experiment_id="e", name="n"),
        RunStarted(run_id="r", attempt=1),
        batch(("loss", 3.0, 0, 10), ("loss", 2.0, 1, 11), ("acc", 0.5, 1, 11)),
        batch(("loss", 9.0, 0, 12)),                        # an older step logged later: not final
        batch(("acc", 0.6, 1, 11), ("acc", math.nan, 1, 9)),  # same (step, ts) later wins; an older ts does not
    ]
    assert final_metrics(events) == {"loss": 2.0, "acc": 0.6}


def test_only_the_last_attempt_counts() -> None:
    events = [
        RunStarted(run_id="r", attempt=1),
        batch(("loss", 1.0, 50, 10), ("only_first", 1.0, 0, 10)),
        RunStarted(run_id="r", attempt=2),
        batch(("loss", 4.0, 0, 20), ("loss", 3.0, 1, 21), attempt=2),
        batch(("loss", 0.1, 99, 30), ("late", 1.0, 0, 30), attempt=1),  # the abandoned attempt, arriving late
    ]
    assert final_metrics(events) == {"loss": 3.0}
    # Points stored before v3 say no attempt: they belong to the attempt started last before them.
    old = [RunStarted(run_id="r", attempt=1), batch(("loss", 1.0, 5, 1), attempt=None),
           RunStarted(run_id="r", attempt=2), batch(("loss", 2.0, 0, 2), attempt=None)]
    assert final_metrics(old) == {"loss": 2.0}
    nan = final_metrics([batch(("x", math.nan, 0, 1))])
    assert math.isnan(nan["x"])


def test_the_lifecycle_fold_gives_one_status_word_per_state() -> None:
    created = RunCreated(run_id="r", experiment_id="e", name="n", source="sdk")
    assert run_lifecycle([]).status is None and not run_lifecycle([]).created
    assert run_lifecycle([created]).status == RunStatus.QUEUED
    running = run_lifecycle([created, RunStarted(run_id="r"), ParamsLogged(run_id="r", params={"lr": "0.1"})])
    assert (running.status, running.ended, dict(running.params)) == (RunStatus.RUNNING, False, {"lr": "0.1"})
    crashed = run_lifecycle([RunCrashed(run_id="r", reason="silent", silent_s=301, last_seq=3)], running)
    assert crashed.status == "crashed" and crashed.ended and crashed.ended_by == "run.crashed"
    resumed = run_lifecycle([RunResumed(run_id="r")], crashed)
    assert resumed.status == RunStatus.RUNNING and not resumed.ended
    assert run_lifecycle([RunCancelled(run_id="r")], resumed).status == RunStatus.KILLED
    assert run_lifecycle([RunFinished(run_id="r", attempt=1)], resumed).status == RunStatus.FINISHED
