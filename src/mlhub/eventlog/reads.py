"""Reads over the log that several packages need (the worker, the tracking service), kept in one place."""

from __future__ import annotations

from mlhub.eventlog.client import EventLog
from mlhub.events import SUBJECT_PREFIX, MetricDefined


async def declared_metric_names(event_log: EventLog) -> frozenset[str]:
    """The names of every metric the event log defines (metric.defined events)."""
    names = set()
    async for recorded in event_log.replay(subject_filter=f"{SUBJECT_PREFIX}.metric.*.defined"):
        if isinstance(recorded.envelope.event, MetricDefined):
            names.add(recorded.envelope.event.name)
    return frozenset(names)
