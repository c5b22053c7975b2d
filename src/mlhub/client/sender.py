"""The sender thread of a Run: records in order, the spool when the hub is away, refusals, heartbeats.

Every request the run makes is a *record* (a log batch with its own `batch_id`, an artifact upload with its
`upload_id`, the finish), delivered strictly in order by one thread. Metric points become batch records as the
run's PointBatcher (batcher.py, the one batcher of every producer) cuts them, through `RecordSink`.

- normal: records are sent from memory; the hub's answer ends them.
- the hub does not answer (or answers 5xx/408/429): that record and every later one are appended to the run's
  spool file (fsync'd) and the run is *degraded*: new records go straight to the spool behind them, and the
  thread resends the spool's oldest record with backoff (0.5 s doubling to 5 s). When the spool is empty again
  the run goes back to sending from memory.
- the hub refuses the token (401/403): the same, but the thread waits AUTH_RETRY_S between tries, warns once,
  and flush/finish return False as soon as what was logged is in the spool (`run.auth_error`); nothing is
  lost: a Hub with a good token resends.
- the hub refuses a record for good (any other 4xx): it is never retried; it goes to the rejected file and
  `run.rejected` (delivery.reject), and the records after it go on. When the hub names the refused keys of a
  batch, only those are rejected and the rest of the batch is sent under a derived batch id.
- nothing delivered for `heartbeat_s`: `POST /runs/{id}/heartbeat` (never spooled; it only matters live). A
  409 INVALID_STATE answer means the run was ended by someone else (e.g. the reaper crashed it):
  `run.ended_remotely`, warned once.

A record is resent byte for byte, so the event ids the API derives from its batch id are the same each time
and JetStream stores each event once (within the duplicate window).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import warnings
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlhub.client.delivery import Rejection, batch_points, deliver, reject, stored_past_window
from mlhub.client.errors import HubAuthError, HubRequestError, HubUnavailable
from mlhub.client.spool import Record, RunSpool
from mlhub.client.transport import metric_values
from mlhub.client.values import Point
from mlhub.events.run import point_columns

if TYPE_CHECKING:
    from mlhub.client.hub import Hub

log = logging.getLogger(__name__)

#: Seconds between tries while the hub refuses the token (a bad token does not get better by hammering).
AUTH_RETRY_S = 30.0
MAX_RETRY_S = 5.0


class Sender:
    """The background half of a Run (its attributes are the Run's; see run.py)."""

    hub: Hub
    run_id: str
    interval_s: float
    retry_backoff_s: float
    heartbeat_s: float
    spool: RunSpool
    rejected: list[Rejection]
    errors: list[str]
    auth_error: HubAuthError | None
    ended_remotely: bool
    points_delivered: int
    records_spilled: int
    send_failures: int
    heartbeats_sent: int
    _cond: threading.Condition
    _outbox: deque[Record]
    _queued: int
    _ended: int

    def _init_sender(self) -> None:
        self._degraded = False
        self._seen: dict[str, set[str]] = {}  # event ids of the run in the log (read for records past the window)
        self._retry_at = 0.0
        self._delay = self.retry_backoff_s
        self._last_contact = time.monotonic()
        self._heartbeats = self.heartbeat_s > 0
        self._closing = False  # no more logging; exit once everything is delivered
        self._abandon = False  # exit now; what is left goes to the spool

    # -- making records (the caller's thread, under the lock) -----------------------------------------------

    def _enqueue_locked(self, body: dict[str, Any]) -> None:
        batch_id = str(uuid.uuid4())
        self._outbox.append({"op": "batch", "id": batch_id, "run_id": self.run_id, "at": time.time(),
                             "body": {**body, "batch_id": batch_id}})
        self._queued += 1
        self._cond.notify_all()

    def _enqueue_batches(self, batches: Sequence[Sequence[Point]]) -> None:
        """Turn the batcher's batches into batch records (columnar, one series per key), in order."""
        with self._cond:
            for points in batches:
                metrics = [{"key": k, "values": metric_values(v), "steps": s, "epochs": e, "timestamps": t}
                           for k, (v, s, e, t) in point_columns(points).items()]
                self._enqueue_locked({"metrics": metrics})

    # -- outcomes -------------------------------------------------------------------------------------------

    def _contact(self) -> None:
        """The hub took something: no heartbeat is due, and a refused token is accepted again."""
        self._last_contact = time.monotonic()
        if self.auth_error is not None:
            log.warning("run %s: the hub takes the token again", self.run_id)
            self.auth_error = None

    def _auth_refused(self, error: HubAuthError) -> None:
        """Note a refused token (warned once while it lasts); the caller keeps the records spooled."""
        with self._cond:
            first = self.auth_error is None
            self.auth_error = error
            if first:
                self.errors.append(str(error))
            self._cond.notify_all()
        if first:
            text = (f"run {self.run_id}: {error}. Its records are kept in the spool ({self.spool.records_path}) "
                    f"and resent every {AUTH_RETRY_S:.0f} s, or by a Hub with a good token")
            log.warning("%s", text)
            warnings.warn(text, RuntimeWarning, stacklevel=2)

    def _delivered(self, record: Record) -> None:
        self._contact()
        with self._cond:
            self._ended += 1
            self.points_delivered += batch_points(record)
            self._cond.notify_all()

    def _rejected(self, rejection: Rejection, *, whole: bool) -> None:
        with self._cond:
            self.rejected.append(rejection)
            self.errors.append(rejection.message)
            if rejection.code == "INVALID_STATE":
                self.ended_remotely = True
            if whole:
                self._ended += 1
            self._cond.notify_all()

    # -- the thread -----------------------------------------------------------------------------------------

    def _heartbeat_due(self, now: float) -> bool:
        return (self._heartbeats and not self._degraded and not self._closing and not self.ended_remotely
                and now >= self._last_contact + self.heartbeat_s)

    def _wait_for_work(self) -> str | None:
        """Wait until there is something to do ("send" or "heartbeat"); None when the thread should exit."""
        with self._cond:
            while True:
                now = time.monotonic()
                if self._abandon:
                    return None
                if self._outbox or (self._degraded and now >= self._retry_at):
                    return "send"
                if self._closing and not self._degraded:
                    return None
                if self._heartbeat_due(now):
                    return "heartbeat"
                wake = [self.interval_s]
                if self._degraded:
                    wake.append(self._retry_at - now)
                elif self._heartbeats and not self._closing and not self.ended_remotely:
                    wake.append(self._last_contact + self.heartbeat_s - now)
                self._cond.wait(max(0.001, min(wake)))

    def _loop(self) -> None:
        try:
            while (work := self._wait_for_work()) is not None:
                if work == "heartbeat":
                    self._heartbeat()
                elif self._degraded:
                    self._spill_outbox()
                    if time.monotonic() >= self._retry_at:
                        self._drain_spool()
                else:
                    self._send_head()
        except Exception:  # never into training: what is left stays in memory/spool, the error is logged
            log.exception("the sender of run %s stopped", self.run_id)
        finally:
            try:
                self._spill_outbox()
                if not self._degraded and self.spool.exists():
                    self.spool.remove_if_delivered()
            except Exception:
                log.exception("run %s: could not spool what is left", self.run_id)
            finally:
                self.spool.unlock()
                with self._cond:
                    self._cond.notify_all()

    def _heartbeat(self) -> None:
        """Tell the hub the run is alive (nothing else was delivered for heartbeat_s); never spooled."""
        try:
            self.hub.transport.request("POST", f"/runs/{self.run_id}/heartbeat", json_body={})
            self.heartbeats_sent += 1
        except HubRequestError as e:
            if e.api_code == "INVALID_STATE":
                with self._cond:
                    self.ended_remotely = True
                log.warning("run %s: the hub says the run has ended (%s); someone else ended it, or the hub "
                            "marked it crashed. What is logged to it now is refused (resume a crashed run with "
                            "hub.resume_run)", self.run_id, e)
            else:
                self._heartbeats = False
                log.warning("run %s: heartbeats stopped, the hub refused one: %s", self.run_id, e)
        except (HubUnavailable, HubAuthError) as e:  # the data records find out and spool; try again later
            log.debug("run %s: heartbeat not taken: %s", self.run_id, e)
        finally:
            self._last_contact = time.monotonic()

    def _send_head(self) -> None:
        with self._cond:
            if not self._outbox:
                return
            record = self._outbox[0]
        try:
            deliver(self.hub.transport, record, self.spool.blobs)
        except (HubUnavailable, HubAuthError) as e:
            self.send_failures += 1
            if isinstance(e, HubAuthError):
                self._auth_refused(e)
            else:
                log.warning("run %s: the hub did not take %s %s (%s); spooling and retrying", self.run_id,
                            record["op"], record["id"], e)
            self._degraded = True
            self._retry_at = time.monotonic() + (AUTH_RETRY_S if isinstance(e, HubAuthError) else self._delay)
            self._spill_outbox()
            return
        except (HubRequestError, OSError, ValueError) as e:
            rejection, rest = reject(self.spool, record, e, spooled=False)
            with self._cond:
                if rest is None:
                    self._outbox.popleft()
                else:
                    self._outbox[0] = rest
            self._rejected(rejection, whole=rest is None)
            return
        with self._cond:
            self._outbox.popleft()
        self._delivered(record)

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
            except HubAuthError as e:
                self.send_failures += 1
                self._auth_refused(e)
                self._retry_at = time.monotonic() + AUTH_RETRY_S
                return
            except HubUnavailable:
                self.send_failures += 1
                self._retry_at = time.monotonic() + self._delay
                self._delay = min(self._delay * 2, MAX_RETRY_S)
                return
            except (HubRequestError, OSError, ValueError) as e:
                rejection, rest = reject(self.spool, record, e, spooled=True)
                if rest is None:
                    self.spool.advance()
                self._rejected(rejection, whole=rest is None)
                continue
            self.spool.mark_done(str(record["id"]))
            self.spool.advance()
            self._delivered(record)
            self._spill_outbox()  # records made meanwhile wait behind the spool, in order


class RecordSink:
    """The PointBatcher's sink of an SDK Run: each batch becomes a log-batch record of the run's sender (which
    delivers, spools and resends it); taking one never fails."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender

    def deliver(self, batch_id: uuid.UUID, batches: Sequence[Sequence[Point]]) -> None:
        """Queue the batches as records, in order (each record has its own id: the API derives its events'
        ids from it)."""
        self.sender._enqueue_batches(batches)
