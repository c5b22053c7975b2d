"""Sending one record (a log batch, an artifact upload, a finish) to the hub, what a refusal does, and
resending a spool.

A record the hub refuses for good (a 4xx other than 401/403/408/429) is never retried: it is written to the
run's rejected file with the hub's answer, warned about (`RecordRejected`) and reported. When the hub names
the keys it refuses (422 `INVALID_METRIC`/`UNDECLARED_METRIC` with `details.keys`), only those keys are
rejected and the rest of the batch is sent again under a derived id (see `spool.without_keys`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mlhub.client.errors import HubAuthError, HubRequestError, HubUnavailable, RecordRejected
from mlhub.client.spool import Record, RunSpool, only_keys, record_keys, spooled_runs, without_keys
from mlhub.client.transport import Transport
from mlhub.events.ids import batch_event_id, upload_event_id

log = logging.getLogger(__name__)

#: Codes of a 422 whose `details.keys` names the keys the hub refuses; the rest of the batch is acceptable.
PER_KEY_CODES = frozenset({"INVALID_METRIC", "UNDECLARED_METRIC"})
#: The state word the hub names for a run already ended by a finish of that status (older hubs: "cancelled").
_SAME_END = {"finished": {"finished"}, "failed": {"failed"}, "killed": {"killed", "cancelled"}}


def deliver(transport: Transport, record: Record, blobs: Path | None = None) -> Any:
    """Send one record; its answer. HubUnavailable: try again later; HubRequestError: refused for good."""
    op = record["op"]
    run_id = record["run_id"]
    if op == "batch":
        return transport.request("POST", f"/runs/{run_id}/log-batch", json_body=record["body"])
    if op == "artifact":
        source = (blobs / record["blob"]) if record.get("blob") and blobs is not None else Path(record["source"])
        params = {"path": record["path"], "sha256": record["sha256"], "kind": record["kind"],
                  "upload_id": record["id"]}
        with open(source, "rb") as body:
            return transport.request("POST", f"/runs/{run_id}/artifacts", content=body, params=params,
                                     headers={"Content-Type": "application/octet-stream"})
    if op == "finish":
        try:
            return transport.request("POST", f"/runs/{run_id}/finish", json_body=record["body"])
        except HubRequestError as e:
            # An earlier attempt whose answer was lost already ended the run the same way: that is success.
            if e.api_code == "INVALID_STATE" and \
                    e.details.get("state") in _SAME_END.get(record["body"]["status"], ()):
                return {"already": True}
            raise
    raise ValueError(f"unknown spool record op {op!r}")


@dataclass(frozen=True)
class Rejection:
    """A record, or some keys of one, that the hub refused for good: never resent, kept in the rejected file.

    `op` is "batch", "artifact" or "finish"; `keys` the metric/param/tag keys refused (an upload's path);
    `status`, `code` and `message` the hub's answer (status None for a local error, e.g. a missing blob);
    `points` how many metric points were not stored."""

    run_id: str
    record_id: str
    op: str
    keys: tuple[str, ...]
    status: int | None
    code: str
    message: str
    points: int


@dataclass
class ResendReport:
    """What a resend of left-over spool files did."""

    runs: list[str] = field(default_factory=list)
    delivered: int = 0
    points: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    skipped_locked: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def batch_points(record: Record) -> int:
    """How many metric points a record carries."""
    if record.get("op") != "batch":
        return 0
    return sum(len(m.get("values", ())) for m in record["body"].get("metrics", ()))


def _refused_keys(record: Record, error: Exception) -> list[str] | None:
    """The keys of a batch the hub refused by name (the rest of it is acceptable), or None for all of it."""
    if not isinstance(error, HubRequestError) or error.status != 422 or error.api_code not in PER_KEY_CODES \
            or record.get("op") != "batch":
        return None
    named = error.details.get("keys")
    if not isinstance(named, list):
        return None
    carried = record_keys(record)
    keys = [k for k in carried if k in {str(n) for n in named}]
    if not keys or len(set(keys)) == len(set(carried)):
        return None
    return list(dict.fromkeys(keys))


def reject(spool: RunSpool, record: Record, error: Exception, *, spooled: bool) -> tuple[Rejection, Record | None]:
    """Handle a refusal for good: write what was refused to the rejected file (with the hub's answer), warn,
    and mark the spooled record (`spooled`) done or split. Returns the rejection and the rest of the record to
    send instead (None when all of it was refused)."""
    keys = _refused_keys(record, error)
    rest = without_keys(record, keys) if keys else None
    if keys is not None and rest is not None:
        refused_body: dict[str, Any] = only_keys(record, keys)
        points = batch_points({"op": "batch", "body": refused_body})
    else:
        keys = record_keys(record)
        refused_body = dict(record.get("body") or {}) if record.get("op") != "artifact" else {
            k: record.get(k) for k in ("path", "sha256", "kind", "size_bytes")}
        refused_body.pop("batch_id", None)
        points = batch_points(record)
    status = getattr(error, "status", None)
    code = str(getattr(error, "api_code", None) or type(error).__name__)
    rejection = Rejection(run_id=str(record["run_id"]), record_id=str(record["id"]), op=str(record["op"]),
                          keys=tuple(keys), status=status, code=code, message=str(error), points=points)
    spool.append_rejected({"at": time.time(), "run_id": rejection.run_id, "record_id": rejection.record_id,
                           "op": rejection.op, "keys": list(rejection.keys), "status": status, "code": code,
                           "message": rejection.message, "points": points, "rest_id": rest["id"] if rest else None,
                           "refused": refused_body})
    if spooled:
        if rest is not None:
            spool.mark_split(rejection.record_id, list(keys))
        else:
            spool.mark_done(rejection.record_id, rejected=str(error))
    shown = ", ".join(repr(k) for k in keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")
    text = (f"run {rejection.run_id}: the hub refused {rejection.op} {rejection.record_id}"
            f"{' of key(s) ' + shown if shown else ''} for good ({error}); {points} point(s) not stored, "
            f"kept in {spool.rejected_path}" + ("; the batch's other keys are sent" if rest is not None else ""))
    log.warning("%s", text)
    warnings.warn(text, RecordRejected, stacklevel=2)
    return rejection, rest


def resend_folder(transport: Transport, folder: Path, *, deadline_s: float, stop: threading.Event,
                  duplicate_window_s: float, skip: frozenset[str] = frozenset(),
                  backoff_s: float = 0.5) -> ResendReport:
    """Resend every run's left-over records in a hub's spool folder, oldest first, with backoff until
    `deadline_s` passes or `stop` is set. Files another process holds (a run still logging) are skipped."""
    report = ResendReport()
    seen: dict[str, set[str]] = {}
    end = time.monotonic() + deadline_s
    for run_id in spooled_runs(folder):
        if run_id in skip:
            continue
        spool = RunSpool(folder, run_id)
        if not spool.try_lock():
            report.skipped_locked.append(run_id)
            continue
        try:
            if not spool.exists():  # delivered and removed by whoever held the lock before
                continue
            report.runs.append(run_id)
            delay = backoff_s
            while (record := spool.next_pending()) is not None:
                if stop.is_set() or time.monotonic() > end:
                    report.left.append(run_id)
                    break
                try:
                    if not stored_past_window(transport, record, duplicate_window_s, seen):
                        deliver(transport, record, spool.blobs)
                except HubAuthError as e:  # a bad token gets no better by retrying: keep everything, stop
                    log.warning("resending the spool of %s stopped: %s; the records stay spooled", transport.url, e)
                    report.errors = [*report.errors[-99:], str(e)]
                    report.left.append(run_id)
                    return report
                except HubUnavailable as e:
                    report.errors = [*report.errors[-99:], str(e)]  # the last 100 only
                    stop.wait(min(delay, max(0.0, end - time.monotonic())))
                    delay = min(delay * 2, 5.0)
                    continue
                except (HubRequestError, OSError, ValueError) as e:
                    rejection, rest = reject(spool, record, e, spooled=True)
                    report.rejected.append(rejection)
                    if rest is None:
                        spool.advance()
                    continue
                spool.mark_done(str(record["id"]))
                spool.advance()
                report.delivered += 1
                report.points += batch_points(record)
                delay = backoff_s
            else:
                spool.remove_if_delivered()
        finally:
            spool.unlock()
    return report


def record_event_id(record: Record) -> str | None:
    """The id of the first event the API appends for a record (mlhub.events.ids, the derivation the tracking
    service uses): a batch's first metric event (else its first params, else tags event), an upload's event.
    An SDK batch holds at most POINTS_PER_EVENT points, one series per key, and its params or tags apart, so
    the API makes one event of it. A finish has none (a repeated finish is recognized by its 409 answer)."""
    if record.get("op") == "batch":
        body = record.get("body") or {}
        part: Literal["metrics", "params", "tags"] = "metrics"
        if not body.get("metrics") and (body.get("params") or body.get("tags")):
            part = "params" if body.get("params") else "tags"
        return str(batch_event_id(uuid.UUID(str(record["id"])), 0, part))
    if record.get("op") == "artifact":
        return str(upload_event_id(uuid.UUID(str(record["id"]))))
    return None


def stored_past_window(transport: Transport, record: Record, duplicate_window_s: float,
                       seen: dict[str, set[str]]) -> bool:
    """For a record older than the event log's duplicate window (where the stream would no longer drop a
    duplicate): whether its event is in the run's events already, read from the log through the API
    (`GET /runs/{id}/events`, once per run and resend; `seen` caches the ids). False for younger records."""
    age = time.time() - float(record.get("at", time.time()))
    event_id = record_event_id(record)
    if age <= duplicate_window_s or event_id is None:
        return False
    run_id = str(record["run_id"])
    if run_id not in seen:
        ids: set[str] = set()
        from_seq: int | None = 1
        try:
            while from_seq is not None:
                page = transport.request("GET", f"/runs/{run_id}/events", params={"from_seq": from_seq,
                                                                                  "limit": 10_000})
                ids.update(str(e["event_id"]) for e in page["data"])
                from_seq = page.get("next_from_seq")
        except HubRequestError as e:
            if e.status != 404:  # 404: the log holds no event of the run yet
                raise
        seen[run_id] = ids
    if event_id in seen[run_id]:
        log.info("%s %s of run %s (%.0f s old, past the duplicate window) is in the event log already: not resent",
                 record.get("op"), record.get("id"), run_id, age)
        return True
    return False
