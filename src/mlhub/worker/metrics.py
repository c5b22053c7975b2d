"""A job attempt's metric points: the SDK's one `PointBatcher` (mlhub.client.batcher) over an event-log sink.

The training loop only buffers (`JobMetrics.log_metrics`, through the MLHubLogger, or `add`); the batcher's
thread cuts batches of at most POINTS_PER_EVENT points and `EventLogSink` appends each as one
`run.metrics_logged` event of the attempt through `send` (a blocking callable; the worker's goes through its
asyncio loop with `append_many`). A failed append is retried by the batcher with the same batch id, and the
event ids are derived from it (mlhub.events.ids), so JetStream's dedup stores each batch once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from mlhub.client.batcher import PointBatcher
from mlhub.client.values import Point
from mlhub.errors import InvalidInput
from mlhub.events import POINTS_PER_EVENT, Envelope, MetricsLogged
from mlhub.events.ids import batch_event_id

Send = Callable[[Sequence[Envelope]], None]


class UndeclaredMetric(InvalidInput):
    """A run logged a metric key that no definition declares while MLHUB_UNDECLARED_METRICS=reject."""

    code = "UNDECLARED_METRIC"


class EventLogSink:
    """The worker's sink of a PointBatcher: one run.metrics_logged event of the attempt per batch, appended
    through `send`, with ids derived from the batch id (a retried batch is the same events)."""

    def __init__(self, run_id: str, send: Send, *, producer: str, correlation_id: str | None = None,
                 attempt: int = 1) -> None:
        self.run_id = run_id
        self.send = send
        self.producer = producer
        self.correlation_id = correlation_id
        #: The run attempt whose points these are (MetricsLogged.attempt): readers count the last attempt's only.
        self.attempt = attempt

    def deliver(self, batch_id: uuid.UUID, batches: Sequence[Sequence[Point]]) -> None:
        """Append one event per batch (all in one `send`); raises whatever the append raised."""
        self.send([Envelope(event=MetricsLogged.from_points(self.run_id, list(points), attempt=self.attempt),
                            producer=self.producer, correlation_id=self.correlation_id,
                            event_id=batch_event_id(batch_id, index))
                   for index, points in enumerate(batches)])


class JobMetrics(PointBatcher):
    """The metric points of one job attempt, batched and appended to the event log in the background; the sink
    the worker's MLHubLogger logs to. With `declared`, a point of any other key is refused
    (MLHUB_UNDECLARED_METRICS=reject)."""

    def __init__(self, run_id: str, send: Send, *, producer: str, correlation_id: str | None = None,
                 interval_s: float = 0.5, max_points: int = POINTS_PER_EVENT, retry_backoff_s: float = 0.5,
                 declared: Collection[str] | None = None, attempt: int = 1) -> None:
        #: When given, add() refuses points of any other key (MLHUB_UNDECLARED_METRICS=reject).
        self.declared = frozenset(declared) if declared is not None else None
        super().__init__(run_id, EventLogSink(run_id, send, producer=producer, correlation_id=correlation_id,
                                              attempt=attempt),
                         interval_s=interval_s, max_points=max_points, retry_backoff_s=retry_backoff_s)

    def add(self, points: Sequence[Point]) -> None:
        """Buffer points; UndeclaredMetric (nothing buffered) for a key not declared."""
        if self.declared is not None:
            undeclared = sorted({p[0] for p in points} - self.declared)
            if undeclared:
                raise UndeclaredMetric(
                    f"run {self.run_id} logged metric key(s) {', '.join(map(repr, undeclared))} that "
                    f"configs/metrics.yaml does not declare, and MLHUB_UNDECLARED_METRICS=reject: declare them and "
                    f"run `mlhub metrics apply`, or set MLHUB_UNDECLARED_METRICS=keep to store and flag them"
                )
        super().add(points)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Nothing: the worker records a job's params itself, from its config snapshot (training.py), so the
        hyperparameters Lightning hands the logger (the module's, taken from the same config) are not recorded a
        second time under other keys."""
