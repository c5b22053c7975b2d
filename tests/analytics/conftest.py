"""Helpers for the analytics tests: event factories and reading a metric table back."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from mlhub.events import Envelope, MetricDefined, MetricSeries, MetricsLogged, MetricSpec, ParamsLogged, RunCreated


class Events:
    """Builds envelopes for tests (steps of a key continue where the previous batch of that run/key ended)."""

    def __init__(self) -> None:
        self._next_step: dict[tuple[str, str], int] = {}

    def run_created(self, run_id: str, experiment_id: str = "exp1") -> Envelope:
        return Envelope(event=RunCreated(run_id=run_id, experiment_id=experiment_id, name=run_id), producer="test")

    def params(self, run_id: str, **params: str) -> Envelope:
        return Envelope(event=ParamsLogged(run_id=run_id, params=params), producer="test")

    def metric_defined(self, name: str, direction: str) -> Envelope:
        spec = MetricSpec(direction=direction)  # type: ignore[arg-type]
        return Envelope(event=MetricDefined(name=name, spec=spec), producer="test")

    def metrics(self, run_id: str, keys: dict[str, list[float]]) -> Envelope:
        series = []
        for key, values in keys.items():
            start = self._next_step.get((run_id, key), 0)
            self._next_step[(run_id, key)] = start + len(values)
            steps = tuple(range(start, start + len(values)))
            series.append(MetricSeries(key=key, values=tuple(values), steps=steps,
                                       epochs=tuple(s // 10 for s in steps),
                                       timestamps=tuple(1_700_000_000_000 + s for s in steps)))
        return Envelope(event=MetricsLogged(run_id=run_id, series=tuple(series)), producer="test")


@pytest.fixture
def events() -> Events:
    return Events()


Point = tuple[str, str | None, str, int, float]


def read_points(metrics_dir: Path) -> list[Point]:
    """Every point as (run_id, experiment_id, key, step, value), sorted; NaN compares via its repr."""
    path = metrics_dir / "points"
    if not DeltaTable.is_deltatable(str(path)):
        return []
    columns = ["run_id", "experiment_id", "key", "step", "value"]
    table: pa.Table = DeltaTable(str(path)).to_pyarrow_table(columns=columns)
    rows = [(r["run_id"], r["experiment_id"], r["key"], r["step"], r["value"]) for r in table.to_pylist()]
    return sorted(rows, key=lambda r: (r[0], r[2], r[3], repr(r[4])))


def same_points(a: list[Point], b: list[Point]) -> bool:
    """Equal lists of points, NaN equal to NaN."""

    def norm(rows: list[Point]) -> list[tuple[object, ...]]:
        return [(*r[:4], "nan" if math.isnan(r[4]) else r[4]) for r in rows]
    return norm(a) == norm(b)
