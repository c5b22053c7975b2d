"""Sending one record (a log batch, an artifact upload, a finish) to the hub, and resending a spool."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlhub.client.errors import HubRequestError, HubUnavailable
from mlhub.client.spool import Record, RunSpool, spooled_runs
from mlhub.client.transport import Transport

log = logging.getLogger(__name__)


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
            if e.api_code == "INVALID_STATE" and e.details.get("state") == record["body"]["status"]:
                return {"already": True}
            raise
    raise ValueError(f"unknown spool record op {op!r}")


@dataclass
class ResendReport:
    """What a resend of left-over spool files did."""

    runs: list[str] = field(default_factory=list)
    delivered: int = 0
    dropped: int = 0
    points: int = 0
    skipped_locked: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def batch_points(record: Record) -> int:
    """How many metric points a record carries."""
    if record.get("op") != "batch":
        return 0
    return sum(len(m.get("values", ())) for m in record["body"].get("metrics", ()))


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
                except HubUnavailable as e:
                    report.errors = [*report.errors[-99:], str(e)]  # the last 100 only
                    stop.wait(min(delay, max(0.0, end - time.monotonic())))
                    delay = min(delay * 2, 5.0)
                    continue
                except (HubRequestError, OSError, ValueError) as e:
                    log.error("the hub refused spooled %s %s of run %s for good, dropping it: %s",
                              record.get("op"), record.get("id"), run_id, e)
                    spool.mark_done(str(record["id"]), dropped=str(e))
                    spool.advance()
                    report.dropped += 1
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
    """The id of the one event the API appends for a record (the same derivation as mlhub.api.routes_write:
    the first event of a batch, uuid5(batch_id, "log-batch/0"); an upload's uuid5(upload_id, "artifact")).
    An SDK batch holds at most POINTS_PER_BATCH points, one series per key, so the API makes exactly one event
    of it. A finish has none (a repeated finish is recognized by its 409 answer)."""
    if record.get("op") == "batch":
        return str(uuid.uuid5(uuid.UUID(str(record["id"])), "log-batch/0"))
    if record.get("op") == "artifact":
        return str(uuid.uuid5(uuid.UUID(str(record["id"])), "artifact"))
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
