"""The declared metric names (metric.defined events), for MLHUB_UNDECLARED_METRICS=reject: read from the log and
kept for a few seconds, read again at once when a request names a key that is not among them."""

from __future__ import annotations

import time
from collections.abc import Collection

from mlhub.eventlog import EventLog, declared_metric_names


class DeclaredMetrics:
    """A cached view of the declared metric names."""

    def __init__(self, event_log: EventLog, max_age_s: float = 5.0) -> None:
        self.event_log = event_log
        self.max_age_s = max_age_s
        self._names: frozenset[str] = frozenset()
        self._at = float("-inf")

    async def __call__(self) -> Collection[str]:
        """The declared names, read again when older than max_age_s."""
        if time.monotonic() - self._at > self.max_age_s:
            self._names = await declared_metric_names(self.event_log)
            self._at = time.monotonic()
        return self._names
