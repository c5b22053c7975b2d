"""Sending one record (a log batch, an artifact upload, a finish) to the hub, and resending a spool."""

from __future__ import annotations

import logging
import threading
import time
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
                warn_if_past_window(record, duplicate_window_s)
                try:
                    deliver(transport, record, spool.blobs)
                except HubUnavailable as e:
                    report.errors.append(str(e))
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


def warn_if_past_window(record: Record, duplicate_window_s: float) -> None:
    """Log that a record older than the event log's duplicate window is resent (it may be stored twice if an
    earlier attempt had reached the event log)."""
    age = time.time() - float(record.get("at", time.time()))
    if age > duplicate_window_s:
        log.warning("resending %s %s of run %s %.0f s after it was first sent, past the event log's duplicate "
                    "window of %.0f s: if an earlier attempt reached the hub it is stored twice",
                    record.get("op"), record.get("id"), record.get("run_id"), age, duplicate_window_s)
