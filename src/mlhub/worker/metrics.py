"""A background metric sender: training threads add points and never wait on the network.

`MetricSender.add()` only appends to an in-memory buffer. A daemon thread wakes at most every
`interval_s` (or as soon as a full batch is waiting), cuts the buffer into `MetricsLogged` events of at most
`max_points` points (each saying the run attempt they belong to), and hands them to `send` (a blocking
callable; the worker's sends through its asyncio loop with `append_many`). A failed send is retried with the
SAME envelopes (same event ids, so JetStream's dedup stores each batch once) after a backoff, forever until
`close()`'s deadline: a send failure never reaches the training loop. `flush()` waits until every point added
so far is acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence

from mlhub.errors import InvalidInput
from mlhub.events import Envelope, MetricPoint, MetricsLogged

log = logging.getLogger(__name__)

#: Points per MetricsLogged event (each event stays far below the stream's message size limit).
MAX_POINTS_PER_EVENT = 1000
Send = Callable[[Sequence[Envelope]], None]


class UndeclaredMetric(InvalidInput):
    """A run logged a metric key that no definition declares while MLHUB_UNDECLARED_METRICS=reject."""

    code = "UNDECLARED_METRIC"


class MetricSender:
    """Buffers metric points of one run and sends them in batches from a background thread."""

    def __init__(
        self,
        run_id: str,
        send: Send,
        *,
        producer: str,
        correlation_id: str | None = None,
        interval_s: float = 0.5,
        max_points: int = MAX_POINTS_PER_EVENT,
        retry_backoff_s: float = 0.5,
        declared: Collection[str] | None = None,
        attempt: int = 1,
    ) -> None:
        self.run_id = run_id
        #: The run attempt whose points these are (MetricsLogged.attempt): readers count the last attempt's only.
        self.attempt = attempt
        #: When given, add() refuses points of any other key (MLHUB_UNDECLARED_METRICS=reject).
        self.declared = frozenset(declared) if declared is not None else None
        self.producer = producer
        self.correlation_id = correlation_id
        self.interval_s = interval_s
        self.max_points = max_points
        self.retry_backoff_s = retry_backoff_s
        self._send = send
        self._buffer: list[MetricPoint] = []
        self._cond = threading.Condition()
        self._added = 0  # points added so far
        self._acked = 0  # points whose event was acknowledged
        self._closing = False
        self._flush_waiters = 0
        self._next_send = 0.0
        self.dropped = 0  # points given up on at close (their sends kept failing)
        self.failures = 0  # failed sends (each retried)
        self.events_sent = 0
        self._thread = threading.Thread(target=self._loop, name=f"mlhub-metrics-{run_id[:8]}", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Points added but not acknowledged yet."""
        with self._cond:
            return self._added - self._acked

    def add(self, points: Sequence[MetricPoint]) -> None:
        """Queue points for sending; returns at once. UndeclaredMetric (nothing queued) for a key not declared."""
        if not points:
            return
        if self.declared is not None:
            undeclared = sorted({p.key for p in points} - self.declared)
            if undeclared:
                raise UndeclaredMetric(
                    f"run {self.run_id} logged metric key(s) {', '.join(map(repr, undeclared))} that "
                    f"configs/metrics.yaml does not declare, and MLHUB_UNDECLARED_METRICS=reject: declare them and "
                    f"run `mlhub metrics apply`, or set MLHUB_UNDECLARED_METRICS=keep to store and flag them"
                )
        with self._cond:
            if self._closing:
                raise RuntimeError("the metric sender is closed")
            self._buffer.extend(points)
            self._added += len(points)
            if len(self._buffer) >= self.max_points:
                self._cond.notify_all()

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until every point added so far is acknowledged; False when timeout_s passed first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._added
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                while self._acked < target:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._thread.is_alive():
                        return False
                    self._cond.wait(min(left, 0.1))
            finally:
                self._flush_waiters -= 1
        return True

    def close(self, timeout_s: float = 60.0) -> bool:
        """Flush, then stop the thread; False when some points could not be delivered in time."""
        delivered = self.flush(timeout_s)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=max(1.0, timeout_s))
        return delivered and self.dropped == 0

    def _take(self) -> list[MetricPoint] | None:
        """The next batch to send, once one is due; None when the sender is closed and empty."""
        with self._cond:
            while True:
                if not self._buffer:
                    if self._closing:
                        return None
                    self._cond.wait(self.interval_s)
                    continue
                now = time.monotonic()
                due = (len(self._buffer) >= self.max_points or self._flush_waiters > 0 or self._closing
                       or now >= self._next_send)
                if due:
                    break
                self._cond.wait(self._next_send - now)
            # Big backlogs go out as several events in one append_many (pipelined), capped per round.
            cut = self.max_points * 16
            batch, self._buffer = self._buffer[:cut], self._buffer[cut:]
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            envelopes = [
                Envelope(event=MetricsLogged.from_points(self.run_id, batch[i : i + self.max_points],
                                                         attempt=self.attempt),
                         producer=self.producer, correlation_id=self.correlation_id)
                for i in range(0, len(batch), self.max_points)
            ]
            delivered = self._deliver(envelopes)
            with self._cond:
                self._acked += len(batch)
                if not delivered:
                    self.dropped += len(batch)
                self._next_send = time.monotonic() + self.interval_s
                self._cond.notify_all()

    def _deliver(self, envelopes: list[Envelope]) -> bool:
        """Send until acknowledged, retrying the same envelopes (same ids: stored once); False if given up."""
        delay = self.retry_backoff_s
        while True:
            try:
                self._send(envelopes)
                self.events_sent += len(envelopes)
                return True
            except Exception as e:  # any failure: log, back off, retry; training must never see it
                self.failures += 1
                log.warning("sending %d metric events of run %s failed (%r); retrying", len(envelopes),
                            self.run_id, e)
                with self._cond:
                    if self._closing:  # close() already waited its deadline for these
                        return False
                    self._cond.wait(delay)
                delay = min(delay * 2, 5.0)
