"""What a run logs, checked and shaped at the call: metric points, params and tags.

One rule set for every producer: keys and values are checked with `mlhub.events.keys` (`check_key`,
`metric_value`, `check_step`, `check_timestamp`), so the SDK refuses at the call what the hub would refuse.
Each function returns what is valid *and* the problems, so a caller can queue the valid keys of a call and
then raise `InvalidMetric` naming the bad ones (one bad key never costs another key its points).

Params and tags: nested mappings (and dataclasses, argparse Namespaces) are flattened with dots, as
Lightning's `_flatten_dict` does with its delimiter; strings are kept as they are, every other value is
written as JSON (`true`, `null`, `[1, 2]`, never a Python repr), numpy/torch scalars as their number.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Literal

from mlhub.errors import InvalidMetric
from mlhub.events import MAX_PARAM_VALUE_LENGTH, MAX_TAG_VALUE_LENGTH
from mlhub.events.keys import check_key, check_step, check_timestamp, metric_value

#: A metric point: key, value, step, epoch, timestamp in ms.
Point = tuple[str, float, int, int, int]
_JSON_NATIVE = (str, int, float, bool, type(None), list, tuple, dict)
MAX_VALUE_LENGTH = {"param": MAX_PARAM_VALUE_LENGTH, "tag": MAX_TAG_VALUE_LENGTH}


def _nested(value: Any) -> Mapping[Any, Any] | None:
    """The mapping a value is flattened into (Lightning flattens dataclasses and Namespaces too), or None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, argparse.Namespace):
        return vars(value)
    if isinstance(value, Mapping):
        return value
    return None


def flatten_params(params: Mapping[Any, Any] | argparse.Namespace, delimiter: str = ".") -> dict[str, Any]:
    """Nested mappings flattened into `outer.inner` keys (Lightning's `_flatten_dict` semantics, dots as the
    delimiter, as the worker writes params): `{"opt": {"lr": 0.1}}` -> `{"opt.lr": 0.1}`. An empty nested
    mapping adds nothing."""
    top = _nested(params)
    if top is None:
        raise InvalidMetric(f"params must be a mapping (or a dataclass or Namespace), got {type(params).__name__}")
    flat: dict[str, Any] = {}

    def walk(prefix: str, mapping: Mapping[Any, Any]) -> None:
        for key, value in mapping.items():
            name = f"{prefix}{delimiter}{key}" if prefix else str(key)
            inner = _nested(value)
            if inner is not None:
                walk(name, inner)
            else:
                flat[name] = value

    walk("", top)
    return flat


def _jsonable(value: Any) -> Any:
    """What json.dumps cannot write itself: scalars through .item(), arrays through .tolist(), else str()."""
    for method in ("item", "tolist"):
        if hasattr(value, method):
            try:
                return getattr(value, method)()
            except (TypeError, ValueError):
                continue
    return str(value)


def param_value(value: Any) -> str:
    """A param or tag value as the string stored: a str as it is; anything else as JSON (`json.dumps(value,
    default=...)`: numbers, `true`/`false`, `null`, lists); a numpy/torch scalar as its number; an object
    JSON has no form for (a Path, an enum) as its `str()`."""
    if isinstance(value, str):
        return value
    if not isinstance(value, _JSON_NATIVE):
        value = _jsonable(value)
        if isinstance(value, str):
            return value
    return json.dumps(value, default=_jsonable, ensure_ascii=False)


def string_values(values: Mapping[Any, Any], what: Literal["param", "tag"]) -> tuple[dict[str, str], list[str]]:
    """Params or tags flattened and turned into strings: the valid ones, and a problem (naming the key) for
    each key that is bad or whose value is longer than the hub stores."""
    limit = MAX_VALUE_LENGTH[what]
    valid: dict[str, str] = {}
    problems: list[str] = []
    for key, value in flatten_params(values).items():
        try:
            check_key(key, what)
        except InvalidMetric as e:
            problems.append(str(e))
            continue
        text = param_value(value)
        if len(text) > limit:
            problems.append(f"{what} {key!r}: value is {len(text)} characters long; {limit} at most")
            continue
        valid[key] = text
    return valid, problems


def metric_points(metrics: Mapping[Any, Any], step: int, epoch: int, timestamp_ms: int) -> tuple[list[Point],
                                                                                               list[str]]:
    """One point per valid key at (step, epoch, timestamp), and a problem for each bad key or value."""
    if not isinstance(metrics, Mapping):
        raise InvalidMetric(f"metrics must be a mapping of key to number, got {type(metrics).__name__}")
    points: list[Point] = []
    problems: list[str] = []
    for key, value in metrics.items():
        try:
            points.append((check_key(key), metric_value(value, key), step, epoch, timestamp_ms))
        except InvalidMetric as e:
            problems.append(str(e))
    return points, problems


def checked_position(step: Any, epoch: Any, timestamp_ms: Any) -> tuple[int | None, int, int | None]:
    """step (None stays None: the run picks the next one), epoch (default 0) and timestamp (None: now)."""
    return (None if step is None else check_step(step), 0 if epoch is None else check_step(epoch, "epoch"),
            None if timestamp_ms is None else check_timestamp(timestamp_ms, "timestamp_ms"))


def raise_problems(problems: list[str], logged: int, run_id: str) -> None:
    """InvalidMetric naming every refused key of a call, saying how many of its keys were logged anyway."""
    if not problems:
        return
    head = problems[0] if len(problems) == 1 else f"{len(problems)} keys refused: " + "; ".join(problems)
    kept = f" (run {run_id}: the call's {logged} other key(s) were logged)" if logged else f" (run {run_id})"
    raise InvalidMetric(head + kept)
