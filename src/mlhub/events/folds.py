"""Pure folds over a run's events that several packages need to agree on (no I/O).

`final_metrics` is the one definition of a run's "final metrics", used by `mlhub reproduce` (scheduler) and the
registry's promotion gates, so a reproduction and a `reproduced: true` gate judge the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable

from mlhub.events.base import DomainEvent
from mlhub.events.run import MetricsLogged, RunStarted


def final_metrics(events: Iterable[DomainEvent]) -> dict[str, float]:
    """The final value of each metric key of a run, from its events oldest first.

    Only the last attempt counts (a `run.started` starts over: an abandoned attempt's points are not final).
    Within it, a key's final value is its point with the highest (step, timestamp); of equal ones the later
    logged wins (the rule of the read model's `metric_summaries.last_value`). NaN stays NaN.
    """
    final: dict[str, float] = {}
    at: dict[str, tuple[int, int]] = {}
    for event in events:
        if isinstance(event, RunStarted):
            final, at = {}, {}
        elif isinstance(event, MetricsLogged):
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
