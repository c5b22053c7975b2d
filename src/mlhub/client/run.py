"""A tracked run of a user script: `log_metrics` only buffers; a background thread sends, spills, resends.

Every request the run makes is a *record* (a log batch with its own `batch_id`, an artifact upload with its
`upload_id`, the finish), delivered strictly in order by one sender thread:

- normal: records are sent from memory; the hub's answer ends them.
- the hub does not answer (or answers 5xx): that record and every later one are appended to the run's spool
  file (fsync'd) and the run is *degraded*: new records go straight to the spool behind them, and the thread
  resends the spool's oldest record with backoff (0.5 s doubling to 5 s). When the spool is empty again the
  run goes back to sending from memory.
- the hub refuses a record for good (400/404/409/422): it is dropped, logged and kept in `run.errors`; it
  would be refused again.

A record is resent byte for byte, so the event ids the API derives from its batch id are the same each time
and JetStream stores each event once (within the duplicate window). The training loop never waits on the
network: `log_metrics` appends to a list under a lock.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlhub.client.delivery import batch_points, deliver, stored_past_window
from mlhub.client.errors import HubRequestError, HubUnavailable, InvalidMetric, RunClosed
from mlhub.client.spool import Record, RunSpool
from mlhub.client.transport import metric_values

if TYPE_CHECKING:
    from mlhub.client.hub import Hub

log = logging.getLogger(__name__)

Status = Literal["finished", "failed", "cancelled"]
#: A metric point: key, value, step, epoch, timestamp in ms.
Point = tuple[str, float, int, int, int]
MAX_KEY_LENGTH = 250
#: Points per batch: the API's POINTS_PER_EVENT, so that each batch (one series per key) becomes exactly one
#: event, whose id (derived from the batch id) tells whether the batch is stored (see delivery.py).
POINTS_PER_BATCH = 8_000
MAX_COUNT = 2**63 - 1


def to_float(value: Any) -> float:
    """A metric value as a Python float (a 0-d tensor or numpy scalar through .item())."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{type(value).__name__} is not a number")
    return float(value)


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise InvalidMetric(f"{name} must be an integer from 0 to 2**63-1, got {value!r}")
    return value


@dataclass(frozen=True)
class ArtifactInfo:
    """A logged artifact: its path in the run, hash, size, and whether the hub has it yet (else spooled)."""

    path: str
    sha256: str
    size_bytes: int
    uploaded: bool


def file_sha256(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class Run:
    """One run on the hub: log metrics, params, tags and artifacts, then finish (or use it as a context
    manager: `with hub.start_run(...) as run:` finishes it, "failed" when the block raises)."""

    def __init__(self, hub: Hub, run_id: str, experiment_id: str, *, interval_s: float = 0.5,
                 max_points: int = POINTS_PER_BATCH, retry_backoff_s: float = 0.5,
                 finish_timeout_s: float = 60.0) -> None:
        self.hub = hub
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.interval_s = interval_s
        self.max_points = max(1, min(max_points, POINTS_PER_BATCH))
        self.retry_backoff_s = retry_backoff_s
        self.finish_timeout_s = finish_timeout_s
        self.spool = RunSpool(hub.spool_folder, run_id)
        #: Requests the hub refused for good (each dropped).
        self.errors: list[str] = []
        self.points_logged = 0
        self.points_delivered = 0
        self.records_spilled = 0
        self.send_failures = 0
        self.status: Status | None = None
        self._cond = threading.Condition()
        self._points: list[Point] = []
        self._outbox: deque[Record] = deque()
        self._queued = 0  # records made so far
        self._ended = 0  # records delivered or dropped (in order)
        self._degraded = False
        self._seen: dict[str, set[str]] = {}  # event ids of the run in the log (read for records past the window)
        self._retry_at = 0.0
        self._delay = retry_backoff_s
        self._next_cut = time.monotonic() + interval_s
        self._flushing = 0
        self._closing = False  # no more logging; exit once everything is delivered
        self._abandon = False  # exit now; what is left goes to the spool
        self._thread = threading.Thread(target=self._loop, name=f"mlhub-run-{run_id[:8]}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"Run(run_id={self.run_id!r}, experiment_id={self.experiment_id!r}, status={self.status!r})"

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self.status is not None:
            return
        if exc is None:
            self.finish("finished")
        elif isinstance(exc, KeyboardInterrupt):
            self.finish("cancelled", error="KeyboardInterrupt")
        else:
            self.finish("failed", error_type=type(exc).__name__, error=str(exc)[:20_000])

    # -- logging (any thread; never waits on the network) ---------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, *, epoch: int | None = None,
                    timestamp_ms: int | None = None) -> None:
        """Buffer one point per key at `step` (default 0) and `epoch` (default 0); returns at once.

        Values are numbers (or 0-d tensors / numpy scalars); NaN and infinities are kept. A bad key or value
        raises InvalidMetric naming it, and nothing of the call is buffered."""
        ts = int(time.time() * 1000) if timestamp_ms is None else _count("timestamp_ms", timestamp_ms)
        step_n = 0 if step is None else _count("step", step)
        epoch_n = 0 if epoch is None else _count("epoch", epoch)
        points: list[Point] = []
        for key, value in metrics.items():
            if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LENGTH:
                raise InvalidMetric(f"metric key {key!r}: must be a non-blank string of at most {MAX_KEY_LENGTH} "
                                    "characters")
            try:
                number = to_float(value)
            except (TypeError, ValueError) as e:
                raise InvalidMetric(f"metric {key!r}: value {value!r} is not a number ({e})") from None
            points.append((key, number, step_n, epoch_n, ts))
        if not points:
            return
        with self._cond:
            self._check_open()
            self._points.extend(points)
            self.points_logged += len(points)
            if len(self._points) >= self.max_points:
                self._cond.notify_all()

    def log_metric(self, key: str, value: Any, step: int | None = None, *, epoch: int | None = None) -> None:
        """One point (see log_metrics)."""
        self.log_metrics({key: value}, step, epoch=epoch)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record params (values as strings); sent in the background like metrics."""
        self._enqueue_batch({"params": {str(k): str(v) for k, v in params.items()}})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (values as strings); sent in the background."""
        self._enqueue_batch({"tags": {str(k): str(v) for k, v in tags.items()}})

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None,
                     kind: Literal["checkpoint", "model", "onnx", "file"] = "file") -> ArtifactInfo:
        """Upload a file as an artifact of the run (waits for the upload; the sha256 travels with it and the
        hub refuses a body that does not match). When the hub does not answer, the file's bytes are copied
        into the spool and uploaded later by the sender: `uploaded` is then False."""
        source = Path(path)
        if not source.is_file():
            raise InvalidMetric(f"artifact {str(source)!r}: not a file")
        name = artifact_path or source.name
        sha256, size = file_sha256(source)
        record: Record = {"op": "artifact", "id": str(uuid.uuid4()), "run_id": self.run_id, "at": time.time(),
                          "path": name, "sha256": sha256, "kind": kind, "size_bytes": size}
        with self._cond:
            self._check_open()
            direct = not self._degraded  # uploads need no order among the batches
        if direct:
            try:
                deliver(self.hub.transport, {**record, "source": str(source)})
                return ArtifactInfo(name, sha256, size, uploaded=True)
            except HubUnavailable as e:
                log.warning("uploading %s to run %s failed (%s); it is spooled and sent later", source,
                            self.run_id, e)
        record["blob"] = self.spool.store_blob(source, sha256)
        with self._cond:
            self._outbox.append(record)
            self._queued += 1
            self._cond.notify_all()
        return ArtifactInfo(name, sha256, size, uploaded=False)

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until everything logged so far is delivered (or refused); False when timeout_s passed first
        (what is left stays spooled and keeps being resent)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._cut_locked()
            target = self._queued
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._ended < target:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._thread.is_alive():
                        return False
                    self._cond.wait(min(left, 0.1))
            finally:
                self._flushing -= 1
        return True

    def finish(self, status: Status = "finished", *, error_type: str | None = None, error: str | None = None,
               timeout_s: float | None = None) -> bool:
        """Send what is buffered, then end the run with `status`; True once the hub has it all. False when the
        hub did not take everything within timeout_s (default finish_timeout_s): the rest, the finish
        included, is in the spool, and the next Hub on this machine (same URL and spool dir) resends it."""
        with self._cond:
            if self.status is not None:
                raise RunClosed(f"run {self.run_id} was already finished ({self.status})")
            self.status = status
            self._cut_locked()
            body: dict[str, Any] = {"status": status}
            if error_type is not None:
                body["error_type"] = error_type[:200]
            if error is not None:
                body["error"] = error[:20_000]
            self._outbox.append({"op": "finish", "id": str(uuid.uuid4()), "run_id": self.run_id,
                                 "at": time.time(), "body": body})
            self._queued += 1
            self._closing = True
            self._cond.notify_all()
        delivered = self.flush(self.finish_timeout_s if timeout_s is None else timeout_s)
        with self._cond:
            if not delivered:
                self._abandon = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        self.hub._forget(self)
        if not delivered:
            log.warning("run %s: the hub did not take everything in time; %d record(s) are spooled in %s and "
                        "will be resent by the next Hub", self.run_id, self._queued - self._ended,
                        self.spool.records_path)
        return delivered

    @property
    def pending(self) -> int:
        """Records (batches, uploads, the finish) not delivered yet, plus one for unsent buffered points."""
        with self._cond:
            return self._queued - self._ended + (1 if self._points else 0)

    # -- the sender thread ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.status is not None:
            raise RunClosed(f"run {self.run_id} is finished ({self.status}): nothing more can be logged to it")

    def _enqueue_batch(self, body: dict[str, Any]) -> None:
        batch_id = str(uuid.uuid4())
        with self._cond:
            self._check_open()
            self._outbox.append({"op": "batch", "id": batch_id, "run_id": self.run_id, "at": time.time(),
                                 "body": {**body, "batch_id": batch_id}})
            self._queued += 1
            self._cond.notify_all()

    def _cut_locked(self) -> None:
        """Turn the buffered points into batch records (columnar, one series per key). Holds the lock."""
        while self._points:
            points, self._points = self._points[: self.max_points], self._points[self.max_points:]
            columns: dict[str, tuple[list[float], list[int], list[int], list[int]]] = {}
            for key, value, step, epoch, ts in points:
                col = columns.setdefault(key, ([], [], [], []))
                col[0].append(value)
                col[1].append(step)
                col[2].append(epoch)
                col[3].append(ts)
            batch_id = str(uuid.uuid4())
            metrics = [{"key": k, "values": metric_values(v), "steps": s, "epochs": e, "timestamps": t}
                       for k, (v, s, e, t) in columns.items()]
            self._outbox.append({"op": "batch", "id": batch_id, "run_id": self.run_id, "at": time.time(),
                                 "body": {"metrics": metrics, "batch_id": batch_id}})
            self._queued += 1
        self._next_cut = time.monotonic() + self.interval_s

    def _wait_for_work(self) -> bool:
        """Wait until there is something to do; False when the thread should exit."""
        with self._cond:
            while True:
                now = time.monotonic()
                if self._abandon:
                    return False
                if self._points and (len(self._points) >= self.max_points or self._flushing or self._closing
                                     or now >= self._next_cut):
                    self._cut_locked()
                if self._outbox or (self._degraded and now >= self._retry_at):
                    return True
                if self._closing and not self._degraded and not self._points:
                    return False
                wake = [self._next_cut - now] if self._points else [self.interval_s]
                if self._degraded:
                    wake.append(self._retry_at - now)
                self._cond.wait(max(0.001, min(wake)))

    def _loop(self) -> None:
        try:
            while self._wait_for_work():
                if self._degraded:
                    self._spill_outbox()
                    if time.monotonic() >= self._retry_at:
                        self._drain_spool()
                else:
                    self._send_head()
        except Exception:  # never into training: what is left stays in memory/spool, the error is logged
            log.exception("the sender of run %s stopped", self.run_id)
        finally:
            try:
                with self._cond:  # abandoned with points still buffered: spool them too
                    self._cut_locked()
                self._spill_outbox()
                if not self._degraded and self.spool.exists():
                    self.spool.remove_if_delivered()
            except Exception:
                log.exception("run %s: could not spool what is left", self.run_id)
            finally:
                self.spool.unlock()
                with self._cond:
                    self._cond.notify_all()

    def _record_ended(self, record: Record, error: str | None = None) -> None:
        with self._cond:
            self._ended += 1
            if error is None:
                self.points_delivered += batch_points(record)
            else:
                self.errors.append(error)
            self._cond.notify_all()

    def _send_head(self) -> None:
        with self._cond:
            if not self._outbox:
                return
            record = self._outbox[0]
        try:
            deliver(self.hub.transport, record, self.spool.blobs)
        except HubUnavailable as e:
            self.send_failures += 1
            log.warning("run %s: the hub did not take %s %s (%s); spooling and retrying", self.run_id,
                        record["op"], record["id"], e)
            self._degraded = True
            self._retry_at = time.monotonic() + self._delay
            self._spill_outbox()
            return
        except (HubRequestError, OSError, ValueError) as e:
            log.error("run %s: the hub refused %s %s for good, dropping it: %s", self.run_id, record["op"],
                      record["id"], e)
            with self._cond:
                self._outbox.popleft()
            self._record_ended(record, str(e))
            return
        with self._cond:
            self._outbox.popleft()
        self._record_ended(record)

    def _spill_outbox(self) -> None:
        """Move every record waiting in memory to the spool file (in order, fsync'd)."""
        with self._cond:
            records = list(self._outbox)
        if not records:
            return
        if not self.spool.try_lock():
            log.error("run %s: another process holds the spool lock %s; keeping %d record(s) in memory",
                      self.run_id, self.spool.lock_path, len(records))
            return
        self.spool.append(records)
        with self._cond:
            for _ in records:
                self._outbox.popleft()
            self.records_spilled += len(records)
        self._degraded = True

    def _drain_spool(self) -> None:
        """Resend spooled records oldest first until one fails (back off) or none is left (leave degraded)."""
        while not self._abandon:
            record = self.spool.next_pending()
            if record is None:
                self._degraded = False
                self._delay = self.retry_backoff_s
                return
            try:
                if not stored_past_window(self.hub.transport, record, self.hub.duplicate_window_s, self._seen):
                    deliver(self.hub.transport, record, self.spool.blobs)
            except HubUnavailable:
                self.send_failures += 1
                self._retry_at = time.monotonic() + self._delay
                self._delay = min(self._delay * 2, 5.0)
                return
            except (HubRequestError, OSError, ValueError) as e:
                log.error("run %s: the hub refused spooled %s %s for good, dropping it: %s", self.run_id,
                          record["op"], record["id"], e)
                self.spool.mark_done(str(record["id"]), dropped=str(e))
                self.spool.advance()
                self._record_ended(record, str(e))
                continue
            self.spool.mark_done(str(record["id"]))
            self.spool.advance()
            self._record_ended(record)
            self._spill_outbox()  # records made meanwhile wait behind the spool, in order
