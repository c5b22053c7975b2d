"""The one background batcher of metric points, for every producer: an SDK Run and a worker's job.

`log_metrics` (or `add`, for points already checked) only appends to an in-memory buffer; the training loop
never waits on the network. A daemon thread wakes at most every `interval_s` (or as soon as a full batch is
waiting, or a flush asks), cuts the buffer into batches of at most `max_points` points (POINTS_PER_EVENT: one
event each) and hands them to its sink's `deliver(batch_id, batches)`:

- an SDK Run's sink turns each batch into a record of its sender (HTTP, spool, refusals: sender.py), which
  never fails here;
- the worker's event-log sink appends one run.metrics_logged event per batch, with event ids derived from
  `batch_id`.

A failed `deliver` is retried with the SAME batch id and batches (so an event-log sink's retried events carry
the same ids and JetStream stores each once) after a backoff (0.5 s doubling to 5 s) until `close()`'s deadline:
a failure never reaches the training loop. `flush()` waits until every point added so far is delivered.

A call without a step takes the batcher's next step: one more than the highest step it was given (from
`next_step`, 0 for a new run), as an SDK Run always did; the same rule for the worker's points.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from mlhub.client.errors import RunClosed
from mlhub.client.values import Point, checked_position, metric_points, raise_problems
from mlhub.events import POINTS_PER_EVENT
from mlhub.events.keys import check_step

log = logging.getLogger(__name__)

MAX_RETRY_S = 5.0


def wait_until(cond: threading.Condition, done: Callable[[], bool], deadline: float, *,
               give_up: Callable[[], bool]) -> bool:
    """Wait on `cond` (held by the caller) until done() (True), or until `deadline` (time.monotonic()) passes or
    give_up() says it cannot come (False); wakes at least every 0.1 s to look."""
    while not done():
        left = deadline - time.monotonic()
        if left <= 0 or give_up():
            return False
        cond.wait(min(left, 0.1))
    return True


class BatchSink(Protocol):
    """Where a batcher's batches go: `deliver` returns once they are taken, or raises to have them retried."""

    def deliver(self, batch_id: uuid.UUID, batches: Sequence[Sequence[Point]]) -> None:
        """Take `batches` (each at most max_points points); the same id and batches again on a retry."""


class PointBatcher:
    """Buffers metric points of one run and delivers them in batches to its sink from a background thread."""

    def __init__(self, run_id: str, sink: BatchSink, *, interval_s: float = 0.5,
                 max_points: int = POINTS_PER_EVENT, retry_backoff_s: float = 0.5, next_step: int = 0) -> None:
        self.run_id = run_id
        self.sink = sink
        self.interval_s = interval_s
        self.max_points = max(1, min(max_points, POINTS_PER_EVENT))
        self.retry_backoff_s = retry_backoff_s
        self.points_logged = 0  # points buffered so far
        self.batches_sent = 0
        self.failures = 0  # failed deliveries (each retried)
        self.dropped = 0  # points given up on at close (their deliveries kept failing)
        self._buffer: list[Point] = []
        self._cond = threading.Condition(threading.RLock())
        self._acked = 0  # points delivered, or given up on
        self._next_step = next_step  # the step of the next call without one
        self._closing = False
        self._flush_waiters = 0
        self._next_send = time.monotonic() + interval_s  # the first batch waits an interval too
        self._thread = threading.Thread(target=self._loop, name=f"mlhub-points-{run_id[:8]}", daemon=True)
        self._thread.start()

    # -- the caller's side (any thread; never waits on the network) -----------------------------------------

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, *, epoch: int | None = None,
                    timestamp_ms: int | None = None) -> list[Point]:
        """Check and buffer one point per key at `step` (None: the next step) and `epoch` (default 0); the
        points buffered. A bad key or value raises InvalidMetric naming it, after the valid keys were buffered
        (one bad key never costs another its points)."""
        step_n, epoch_n, ts = checked_position(step, epoch, timestamp_ms)
        stamp = int(time.time() * 1000) if ts is None else ts
        with self._cond:
            chosen = check_step(self._next_step, "the next automatic step") if step_n is None else step_n
            points, problems = metric_points(metrics, chosen, epoch_n, stamp)
            if points:
                self.add(points)
                self._next_step = max(self._next_step, chosen + 1)
        raise_problems(problems, len(points), self.run_id)
        return points

    def add(self, points: Sequence[Point]) -> None:
        """Buffer points already checked (the system sampler's, at their own steps); returns at once. RunClosed
        once the batcher is closed."""
        if not points:
            return
        with self._cond:
            if self._closing:
                raise RunClosed(f"run {self.run_id}: its metric batcher is closed; nothing more can be logged")
            self._buffer.extend(points)
            self.points_logged += len(points)
            if len(self._buffer) >= self.max_points:
                self._cond.notify_all()

    @property
    def next_step(self) -> int:
        """The step the next log_metrics call without one takes."""
        with self._cond:
            return self._next_step

    @property
    def pending(self) -> int:
        """Points buffered or being delivered, not delivered yet."""
        with self._cond:
            return self.points_logged - self._acked

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until every point added so far is delivered; False when timeout_s passed first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self.points_logged
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                if not wait_until(self._cond, lambda: self._acked >= target, deadline,
                                  give_up=lambda: not self._thread.is_alive()):
                    return False
            finally:
                self._flush_waiters -= 1
        return self.dropped == 0

    def close(self, timeout_s: float = 60.0) -> bool:
        """Flush, then stop the thread (nothing more can be added); False when some points could not be
        delivered in time."""
        delivered = self.flush(timeout_s)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout=max(1.0, timeout_s))
        return delivered and self.dropped == 0

    # -- the thread -----------------------------------------------------------------------------------------

    def _take(self) -> list[Point] | None:
        """The next points to deliver, once some are due; None when the batcher is closed and empty."""
        with self._cond:
            while True:
                if not self._buffer:
                    if self._closing:
                        return None
                    self._cond.wait(self.interval_s)
                    continue
                now = time.monotonic()
                if (len(self._buffer) >= self.max_points or self._flush_waiters > 0 or self._closing
                        or now >= self._next_send):
                    break
                self._cond.wait(self._next_send - now)
            # A big backlog goes out as several batches in one delivery (pipelined), capped per round.
            cut = self.max_points * 16
            taken, self._buffer = self._buffer[:cut], self._buffer[cut:]
            return taken

    def _loop(self) -> None:
        while (points := self._take()) is not None:
            batches = [points[i: i + self.max_points] for i in range(0, len(points), self.max_points)]
            delivered = self._deliver(uuid.uuid4(), batches)
            with self._cond:
                self._acked += len(points)
                if not delivered:
                    self.dropped += len(points)
                self._next_send = time.monotonic() + self.interval_s
                self._cond.notify_all()

    def _deliver(self, batch_id: uuid.UUID, batches: list[list[Point]]) -> bool:
        """Deliver until taken, retrying the same id and batches; False when given up on at close."""
        delay = self.retry_backoff_s
        while True:
            try:
                self.sink.deliver(batch_id, batches)
                self.batches_sent += len(batches)
                return True
            except Exception as e:  # any failure: log, back off, retry; training must never see it
                self.failures += 1
                log.warning("delivering %d metric batch(es) of run %s failed (%r); retrying", len(batches),
                            self.run_id, e)
                with self._cond:
                    if self._closing:  # close() already waited its deadline for these
                        return False
                    self._cond.wait(delay)
                delay = min(delay * 2, MAX_RETRY_S)
