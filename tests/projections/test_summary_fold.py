"""The metric-summary fold's fast path (ordered, NaN-free series) agrees with the point-by-point rule."""

from __future__ import annotations

import math
import random
from typing import Any

from mlhub.projections.sql_changes import _fold_series


def reference(row: dict[str, Any], values: list[float], steps: list[int], stamps: list[int]) -> None:
    """The rule spelled out point by point: count, NaN count, min/max of non-NaN, last by (step, timestamp)."""
    for value, step, ts in zip(values, steps, stamps, strict=True):
        row["count"] += 1
        if math.isnan(value):
            row["nan_count"] += 1
        else:
            row["min_value"] = value if row["min_value"] is None else min(row["min_value"], value)
            row["max_value"] = value if row["max_value"] is None else max(row["max_value"], value)
        if (step, ts) >= (row["last_step"], row["last_timestamp"]):
            row["last_step"], row["last_timestamp"] = step, ts
            row["last_value"] = None if math.isnan(value) else value


def empty() -> dict[str, Any]:
    return {"last_value": None, "last_step": -1, "last_timestamp": -1, "min_value": None, "max_value": None,
            "count": 0, "nan_count": 0}


def test_fast_and_slow_paths_agree_with_the_rule_on_random_batches() -> None:
    rng = random.Random(1234)
    specials = [math.nan, math.inf, -math.inf, 0.0, -0.0]
    for case in range(300):
        fast, slow = empty(), empty()
        step, ts = 0, 1_000
        for _ in range(rng.randint(1, 4)):
            n = rng.randint(1, 50)
            values = [rng.choice(specials) if rng.random() < 0.05 else rng.uniform(-5, 5) for _ in range(n)]
            if case % 3 == 0:  # out of order: a batch that goes back in steps or time
                steps = [rng.randint(0, step + 10) for _ in range(n)]
                stamps = [rng.randint(0, ts + 10) for _ in range(n)]
            else:
                steps = sorted(step + rng.randint(0, 3) for _ in range(n))
                stamps = sorted(ts + rng.randint(0, 3) for _ in range(n))
            step, ts = steps[-1], stamps[-1]
            _fold_series(fast, values, steps, stamps)
            reference(slow, values, steps, stamps)
        assert fast == slow, f"case {case}"
