"""The one validation of keys and values (mlhub.events.keys), and the event models that apply it."""

from __future__ import annotations

import math
import re

import pytest
from pydantic import ValidationError

from mlhub.errors import InvalidMetric
from mlhub.events import (
    MAX_TIMESTAMP_MS,
    MIN_TIMESTAMP_MS,
    MetricDefined,
    MetricSeries,
    MetricSpec,
    ParamsLogged,
    check_key,
    check_step,
    check_timestamp,
    metric_value,
)

GOOD = ["loss", "train/loss", "val/acc@top1", "é", "e\u0301", "损失", "loss (ema)", "f1[macro]", "lr=0.1,wd=1e-4",
        "acc+%", "#tokens", "a:b", "a..b", "x" * 250]
BAD = {"": "empty", " ": "blank", "x" * 251: "251 characters", "a\nb": "U+000A", "tab\there": "U+0009",
       "nul\x00": "U+0000", "/abs": "start with '/'", "a/../b": "'..' path segment", "..": "'..' path segment",
       "semi;colon": "';'", "quote\"": "'\"'", "star*": "'*'", "gt>": "'>'"}


@pytest.mark.parametrize("key", GOOD)
def test_keys_people_use_are_accepted_everywhere(key: str) -> None:
    assert check_key(key) == key
    series = MetricSeries(key=key, values=(1.0,), steps=(0,), epochs=(0,), timestamps=(0,))
    assert series.key == key
    assert ParamsLogged(run_id="r", params={key: "v"}).params == {key: "v"}
    defined = MetricDefined(name=key, spec=MetricSpec(direction="min"))  # any valid key can be declared
    assert defined.aggregate_id.replace("-", "").replace("_", "").isalnum()  # a subject token, never the key


@pytest.mark.parametrize(("key", "why"), BAD.items())
def test_bad_keys_are_refused_with_the_reason(key: str, why: str) -> None:
    with pytest.raises(InvalidMetric, match="metric key .*" + re.escape(why)) as caught:
        check_key(key)
    assert caught.value.code == "INVALID_METRIC"
    with pytest.raises(ValidationError):
        MetricSeries(key=key, values=(1.0,), steps=(0,), epochs=(0,), timestamps=(0,))


def test_declared_metrics_keep_their_old_subject_tokens() -> None:
    assert MetricDefined(name="val_acc", spec=MetricSpec(direction="max")).aggregate_id == "val_acc"


def test_values_are_numbers_never_bools_or_numeric_strings() -> None:
    assert metric_value(1) == 1.0 and metric_value(0.5) == 0.5
    assert math.isnan(metric_value("NaN")) and metric_value("-Infinity") == -math.inf
    for bad in (True, False, "0.5", "1", None, [1.0], b"1"):
        with pytest.raises(InvalidMetric, match="metric 'k'"):
            metric_value(bad, "k")
    with pytest.raises(InvalidMetric, match="too large"):
        metric_value(10**400, "k")
    for bad in (True, "0.5", "nan"):
        with pytest.raises(ValidationError):
            MetricSeries(key="k", values=(bad,), steps=(0,), epochs=(0,), timestamps=(0,))  # type: ignore[arg-type]
    series = MetricSeries(key="k", values=(1, "NaN", "Infinity"), steps=(0, 1, 2), epochs=(0,) * 3,  # type: ignore[arg-type]
                          timestamps=(0,) * 3)
    assert series.values[0] == 1.0 and math.isnan(series.values[1]) and series.values[2] == math.inf


def test_steps_and_timestamps_have_bounds() -> None:
    assert check_step(2**63 - 1) == 2**63 - 1
    for bad in (-1, 2**63, 1.0, True):
        with pytest.raises(InvalidMetric, match="step must be an integer from 0 to 2\\*\\*63-1"):
            check_step(bad)
    assert check_timestamp(MIN_TIMESTAMP_MS) == MIN_TIMESTAMP_MS and check_timestamp(MAX_TIMESTAMP_MS)
    for bad in (MAX_TIMESTAMP_MS + 1, 2**63 - 1, MIN_TIMESTAMP_MS - 1, 1.5):
        with pytest.raises(InvalidMetric, match="years 1 to 9999"):
            check_timestamp(bad)
    with pytest.raises(ValidationError):
        MetricSeries(key="k", values=(1.0,), steps=(0,), epochs=(0,), timestamps=(2**63 - 1,))
