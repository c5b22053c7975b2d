"""Checking a whole tracking request before its first append: keys, values, limits, declared metrics.

Every problem is found before anything is appended, and the error names the keys (`details.keys`), so a
client can drop exactly those and send the rest again (the SDK does).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from mlhub.events import MAX_COUNT, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS, key_problem
from mlhub.tracking.errors import InvalidTrackingInput, LimitExceeded, UndeclaredMetricRefused
from mlhub.tracking.limits import TrackingLimits


@dataclass(frozen=True)
class SeriesInput:
    """Points of one key in columnar form, as a request gave them: values are floats (non-finite included);
    steps default to 0, epochs to 0 and timestamps to the time the request arrived."""

    key: str
    values: Sequence[float]
    steps: Sequence[int] | None = None
    epochs: Sequence[int] | None = None
    timestamps: Sequence[int] | None = None


def _problem(key: str, message: str) -> dict[str, str]:
    return {"key": key, "message": message}


def check_request(limits: TrackingLimits, *, params: Mapping[str, str] | None = None,
                  tags: Mapping[str, str] | None = None, series: Sequence[SeriesInput] = (),
                  declared: Collection[str] | None = None) -> int:
    """Check everything one request would log; the number of metric points. Raises (nothing appended):
    LimitExceeded (too many keys or points), InvalidTrackingInput (bad keys, values or columns, naming the
    keys), UndeclaredMetricRefused (keys that `declared` lacks, when given)."""
    params, tags = params or {}, tags or {}
    keys = len(params) + len(tags) + len({s.key for s in series})
    if keys > limits.max_keys_per_request:
        raise LimitExceeded(f"the request logs {keys} params, tags and metric keys; one request may log "
                            f"{limits.max_keys_per_request} (MLHUB_API_MAX_KEYS_PER_REQUEST): split it",
                            details={"limit": "MLHUB_API_MAX_KEYS_PER_REQUEST", "max": limits.max_keys_per_request,
                                     "value": keys})
    points = sum(len(s.values) for s in series)
    if points > limits.max_points_per_request:
        raise LimitExceeded(f"the request logs {points} metric points; one request may log "
                            f"{limits.max_points_per_request} (MLHUB_API_MAX_POINTS_PER_REQUEST): split it",
                            details={"limit": "MLHUB_API_MAX_POINTS_PER_REQUEST",
                                     "max": limits.max_points_per_request, "value": points})
    problems: list[dict[str, str]] = []
    for kind, values, longest in (("param", params, limits.max_param_value_length),
                                  ("tag", tags, limits.max_tag_value_length)):
        for key, value in values.items():
            why = key_problem(key)
            if why is not None:
                problems.append(_problem(key, f"{kind} key {key!r} {why}"))
            elif not isinstance(value, str):
                problems.append(_problem(key, f"{kind} {key!r}: the value must be a string"))
            elif len(value) > longest:
                problems.append(_problem(key, f"{kind} {key!r}: the value is {len(value)} characters long; "
                                              f"{longest} at most"))
    for s in series:
        problems.extend(_series_problems(s))
    if problems:
        keys_named = sorted({p["key"] for p in problems})
        raise InvalidTrackingInput(f"{len(problems)} problem(s), nothing was stored: {problems[0]['message']}"
                                   + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                                   details={"keys": keys_named, "problems": problems[:100]})
    if declared is not None:
        undeclared = sorted({s.key for s in series} - set(declared))
        if undeclared:
            raise UndeclaredMetricRefused(
                f"metric key(s) {', '.join(map(repr, undeclared))} are not declared in configs/metrics.yaml and "
                "this hub runs with MLHUB_UNDECLARED_METRICS=reject: declare them (`mlhub metrics apply`) or "
                "log other keys; nothing of this request was stored",
                details={"keys": undeclared})
    return points


def _series_problems(s: SeriesInput) -> list[dict[str, str]]:
    why = key_problem(s.key)
    if why is not None:
        return [_problem(s.key, f"metric key {s.key!r} {why}")]
    n = len(s.values)
    if n == 0:
        return [_problem(s.key, f"metric {s.key!r}: no values")]
    found = []
    for name, column, low, high in (("steps", s.steps, 0, MAX_COUNT), ("epochs", s.epochs, 0, MAX_COUNT),
                                    ("timestamps", s.timestamps, MIN_TIMESTAMP_MS, MAX_TIMESTAMP_MS)):
        if column is None:
            continue
        if len(column) != n:
            found.append(_problem(s.key, f"metric {s.key!r}: {name} has {len(column)} entries, values {n}"))
        elif min(column) < low or max(column) > high:
            bound = "within the years 1 to 9999 (ms since the Unix epoch)" if name == "timestamps" else \
                "from 0 to 2**63-1"
            found.append(_problem(s.key, f"metric {s.key!r}: {name} must be {bound}, got "
                                         f"{min(column)}..{max(column)}"))
    return found
