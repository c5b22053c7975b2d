"""Upcasters: functions `upcast_<type>_v<N>_v<N+1>` that turn a stored payload of version N into N+1.

When an event is read, its payload is passed through every upcaster from its stored version up to the
class's current schema_version, in order. Upcasters work on plain JSON dicts, never on classes, so an old
payload never has to be valid under the new class before it is upgraded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mlhub.errors import EventDecodeError

Payload = dict[str, Any]


def upcast_run_metrics_logged_v1_v2(payload: Payload) -> Payload:
    """v1 stored `points: [{key, value, step, epoch, timestamp}, ...]`; v2 stores one columnar series per key.

    Points of one key keep their order; keys appear in the order of their first point.
    """
    series: dict[str, dict[str, Any]] = {}
    for point in payload["points"]:
        s = series.setdefault(
            point["key"], {"key": point["key"], "values": [], "steps": [], "epochs": [], "timestamps": []}
        )
        s["values"].append(point["value"])
        s["steps"].append(point["step"])
        s["epochs"].append(point.get("epoch", 0))
        s["timestamps"].append(point["timestamp"])
    rest = {k: v for k, v in payload.items() if k != "points"}
    return {**rest, "series": list(series.values())}


def upcast_run_metrics_logged_v2_v3(payload: Payload) -> Payload:
    """v3 records the attempt the points belong to; v2 did not say, so its points get None (unknown: they
    belong to the attempt whose run.started came last before them, as readers assumed before v3)."""
    return {**payload, "attempt": None}


def upcast_added_ended_by(payload: Payload) -> Payload:
    """run.finished / run.failed / run.cancelled v2 name who ended a run by hand; earlier ones were not."""
    return {**payload, "ended_by": None}


def upcast_run_code_version_recorded_v1_v2(payload: Payload) -> Payload:
    """v2 lists untracked files apart; v1 did not look at them (its `dirty` may have counted them)."""
    return {**payload, "untracked": [], "untracked_count": 0}


def upcast_run_dataset_version_recorded_v1_v2(payload: Payload) -> Payload:
    """v2 adds the MLflow dataset fields (none in v1, which always had a size)."""
    return {**payload, "digest": None, "source_type": None, "source": None, "schema_text": None, "profile": None,
            "context": None}


#: (event type, from version) -> upcaster to version + 1
UPCASTERS: dict[tuple[str, int], Callable[[Payload], Payload]] = {
    ("run.metrics_logged", 1): upcast_run_metrics_logged_v1_v2,
    ("run.metrics_logged", 2): upcast_run_metrics_logged_v2_v3,
    ("run.finished", 1): upcast_added_ended_by,
    ("run.failed", 1): upcast_added_ended_by,
    ("run.cancelled", 1): upcast_added_ended_by,
    ("run.code_version_recorded", 1): upcast_run_code_version_recorded_v1_v2,
    ("run.dataset_version_recorded", 1): upcast_run_dataset_version_recorded_v1_v2,
}


def upcast(event_type: str, stored_version: int, current_version: int, payload: Payload) -> Payload:
    """Bring a stored payload from its version to the current one, one step at a time."""
    if stored_version > current_version:
        raise EventDecodeError(
            f"{event_type} has schema version {stored_version}, newer than this mlhub knows "
            f"({current_version}): upgrade mlhub to read it"
        )
    if stored_version < 1:
        raise EventDecodeError(f"{event_type} has invalid schema version {stored_version}")
    for version in range(stored_version, current_version):
        step = UPCASTERS.get((event_type, version))
        if step is None:
            raise EventDecodeError(f"no upcaster for {event_type} from schema version {version} to {version + 1}")
        payload = step(payload)
    return payload
