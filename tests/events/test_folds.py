"""final_metrics: the one definition of a run's final metric values (reproduce and registry gates share it)."""

from __future__ import annotations

import math

from mlhub.events import MetricsLogged, RunCreated, RunStarted, final_metrics


def batch(*points: tuple[str, float, int, int]) -> MetricsLogged:
    return MetricsLogged.from_points("r", [(k, v, step, 0, ts) for k, v, step, ts in points])


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
        batch(("loss", 4.0, 0, 20), ("loss", 3.0, 1, 21)),
    ]
    assert final_metrics(events) == {"loss": 3.0}
    nan = final_metrics([batch(("x", math.nan, 0, 1))])
    assert math.isnan(nan["x"])
