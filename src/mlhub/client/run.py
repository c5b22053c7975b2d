"""A tracked run of a user script: `log_metrics` checks and buffers (the one PointBatcher, batcher.py); a
background thread sends what the batcher cuts, with the run's params, tags, uploads and finish (sender.py).

Every call checks its keys and values with `mlhub.events.keys` (values.py) and queues the valid ones before it
raises `InvalidMetric` for the bad ones, so one bad key never costs another key its points. What the hub
refuses later is never silent: it is written to the run's rejected file, warned about, listed in
`run.rejected`, and `flush()`/`finish()` return False.
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

from mlhub.client.batcher import PointBatcher, wait_until
from mlhub.client.delivery import Rejection, deliver
from mlhub.client.errors import HubAuthError, HubUnavailable, RunClosed
from mlhub.client.sender import RecordSink, Sender
from mlhub.client.spool import Record, RunSpool
from mlhub.client.system import SystemSample, SystemSampler
from mlhub.client.values import metric_points, raise_problems, string_values
from mlhub.errors import InvalidInput
from mlhub.events import POINTS_PER_EVENT

if TYPE_CHECKING:
    from mlhub.client.hub import Hub

log = logging.getLogger(__name__)

Status = Literal["finished", "failed", "killed"]
STATUSES: tuple[Status, ...] = ("finished", "failed", "killed")
ArtifactKind = Literal["checkpoint", "model", "onnx", "file"]


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


class Run(Sender):
    """One run on the hub: log metrics, params, tags and artifacts, then finish (or use it as a context
    manager: `with hub.start_run(...) as run:` finishes it, "failed" when the block raises, "killed" on
    Ctrl-C). With `system_metrics_s` > 0 a sampler thread logs the script's system metrics at that interval
    (mlhub.client.system) until the run finishes."""

    def __init__(self, hub: Hub, run_id: str, experiment_id: str, *, interval_s: float = 0.5,
                 max_points: int = POINTS_PER_EVENT, retry_backoff_s: float = 0.5,
                 finish_timeout_s: float = 60.0, heartbeat_s: float = 30.0, next_step: int = 0,
                 params: Mapping[str, str] | None = None, system_metrics_s: float = 0.0) -> None:
        self.hub = hub
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.interval_s = interval_s
        self.retry_backoff_s = retry_backoff_s
        self.finish_timeout_s = finish_timeout_s
        self.heartbeat_s = heartbeat_s
        self.spool = RunSpool(hub.spool_folder, run_id)
        #: What the hub refused for good (each kept in the rejected file, never resent).
        self.rejected: list[Rejection] = []
        #: Messages of the refusals and of token refusals, in order.
        self.errors: list[str] = []
        #: Set while the hub refuses the token (401/403): records stay spooled, flush/finish return False.
        self.auth_error: HubAuthError | None = None
        #: The hub said the run had ended (someone else ended it, or the reaper crashed it).
        self.ended_remotely = False
        self.points_delivered = 0
        self.records_spilled = 0
        self.send_failures = 0
        self.heartbeats_sent = 0
        self.status: Status | None = None
        self._cond = threading.Condition()
        self._outbox: deque[Record] = deque()
        self._queued = 0  # records made so far
        self._ended = 0  # records delivered or rejected (in order)
        self._params: dict[str, str] = dict(params or {})  # what this Run logged: a param keeps its value
        self._init_sender()
        self._thread = threading.Thread(target=self._loop, name=f"mlhub-run-{run_id[:8]}", daemon=True)
        self._thread.start()
        # Each batch (at most POINTS_PER_EVENT points, one series per key) becomes exactly one event, whose id
        # (derived from the record's id) tells whether the batch is stored (see delivery.py).
        self.batcher = PointBatcher(run_id, RecordSink(self), interval_s=interval_s,
                                    max_points=min(max_points, POINTS_PER_EVENT), next_step=next_step)
        self.system_sampler = SystemSampler(self._log_system, system_metrics_s, name=run_id).start()

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
            self.finish("killed", error="KeyboardInterrupt")
        else:
            self.finish("failed", error_type=type(exc).__name__, error=str(exc)[:20_000])

    # -- logging (any thread; never waits on the network) ---------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, *, epoch: int | None = None,
                    timestamp_ms: int | None = None) -> None:
        """Buffer one point per key at `step` and `epoch` (default 0); returns at once.

        Without a step, each call takes the next one (one more than the highest step this run used, from 0).
        Values are numbers (or 0-d tensors / numpy scalars); NaN and infinities are kept; bools and numeric
        strings are refused. A bad key or value raises InvalidMetric naming it, after the call's valid keys
        were buffered."""
        self._check_open()
        self.batcher.log_metrics(metrics, step, epoch=epoch, timestamp_ms=timestamp_ms)

    def log_metric(self, key: str, value: Any, step: int | None = None, *, epoch: int | None = None,
                   timestamp_ms: int | None = None) -> None:
        """One point (see log_metrics; without a step it takes the run's next one)."""
        self.log_metrics({key: value}, step, epoch=epoch, timestamp_ms=timestamp_ms)

    def _log_system(self, sample: SystemSample) -> None:
        """The system sampler's sink: buffer its points at the sample's time step; the automatic step of
        log_metrics is not moved. Nothing once the run is finished or ended elsewhere."""
        if self.status is not None or self.ended_remotely:
            return
        points, problems = metric_points(sample.values, sample.step, 0, sample.timestamp_ms)
        try:
            self.batcher.add(points)
        except RunClosed:  # the run finished meanwhile: its last sample was taken before the finish
            return
        raise_problems(problems, len(points), self.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record params, sent in the background: nested mappings flattened with dots, values as strings
        (non-strings as JSON). A param keeps its value: logging it again with the same value does nothing,
        with another value raises InvalidMetric (the call's other keys are still logged)."""
        valid, problems = string_values(params, "param")
        with self._cond:
            self._check_open()
            new: dict[str, str] = {}
            for key, value in valid.items():
                old = self._params.get(key)
                if old is None:
                    new[key] = value
                elif old != value:
                    problems.append(f"param {key!r} was logged as {old!r} already; a param keeps its value "
                                    f"(log {value!r} under another key)")
            if new:
                self._params.update(new)
                self._enqueue_locked({"params": new})
        raise_problems(problems, len(new), self.run_id)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (a later value replaces an earlier one), sent in the background; flattened and turned into
        strings as params are. A bad key or a too long value raises InvalidMetric after the rest was queued."""
        valid, problems = string_values(tags, "tag")
        with self._cond:
            self._check_open()
            if valid:
                self._enqueue_locked({"tags": valid})
        raise_problems(problems, len(valid), self.run_id)

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None,
                     kind: ArtifactKind = "file") -> ArtifactInfo:
        """Upload a file as an artifact of the run (waits for the upload; the sha256 travels with it and the
        hub refuses a body that does not match). When the hub does not answer (or refuses the token), the
        file's bytes are copied into the spool and uploaded later by the sender: `uploaded` is then False."""
        source = Path(path)
        if not source.is_file():
            raise InvalidInput(f"artifact {str(source)!r}: not a file")
        name = (artifact_path or source.name).strip("/")
        if not name:
            raise InvalidInput(f"artifact {str(source)!r}: artifact_path {artifact_path!r} names no file")
        sha256, size = file_sha256(source)
        record: Record = {"op": "artifact", "id": str(uuid.uuid4()), "run_id": self.run_id, "at": time.time(),
                          "path": name, "sha256": sha256, "kind": kind, "size_bytes": size}
        with self._cond:
            self._check_open()
            direct = not self._degraded  # uploads need no order among the batches
        if direct:
            try:
                deliver(self.hub.transport, {**record, "source": str(source)})
                self._contact()
                return ArtifactInfo(name, sha256, size, uploaded=True)
            except HubAuthError as e:
                self._auth_refused(e)
            except HubUnavailable as e:
                log.warning("uploading %s to run %s failed (%s); it is spooled and sent later", source,
                            self.run_id, e)
        record["blob"] = self.spool.store_blob(source, sha256)
        with self._cond:
            self._outbox.append(record)
            self._queued += 1
            self._cond.notify_all()
        return ArtifactInfo(name, sha256, size, uploaded=False)

    def log_artifacts(self, directory: str | os.PathLike[str], artifact_path: str | None = None,
                      kind: ArtifactKind = "file") -> list[ArtifactInfo]:
        """Upload every file under a directory, each under its path relative to it (below `artifact_path`
        when given), in path order; the ArtifactInfo of each (see log_artifact)."""
        root = Path(directory)
        if not root.is_dir():
            raise InvalidInput(f"artifacts directory {str(root)!r}: not a directory")
        prefix = (artifact_path or "").strip("/")
        files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())
        return [self.log_artifact(p, f"{prefix}/{p.relative_to(root).as_posix()}" if prefix
                                  else p.relative_to(root).as_posix(), kind) for p in files]

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until everything logged so far is delivered or refused. True when all of it is stored; False
        when timeout_s passed first (what is left stays spooled and keeps being resent), when the hub refuses
        the token (`auth_error`; as soon as everything logged is in the spool on disk), or when the hub refused
        anything of this run (`rejected`)."""
        deadline = time.monotonic() + timeout_s
        self.batcher.flush(timeout_s)  # every point buffered so far is a record now
        with self._cond:
            target = self._queued
            # A refused token: return once what was logged is in the spool (fsync'd), not before.
            if not wait_until(self._cond, lambda: self._ended >= target, deadline,
                              give_up=lambda: not self._thread.is_alive() or bool(
                                  self.auth_error and self._degraded and not self._outbox)):
                return False
            return not self.rejected and self.auth_error is None

    def finish(self, status: Status = "finished", *, error_type: str | None = None, error: str | None = None,
               timeout_s: float | None = None) -> bool:
        """Send what is buffered, then end the run with `status` ("finished", "failed" or "killed"); True once
        the hub has all of it. False when the hub refused anything of the run (`rejected`, kept in the
        rejected file), refuses the token (`auth_error`), or did not take everything within timeout_s (default
        finish_timeout_s): what is left, the finish included, is in the spool, and the next Hub on this
        machine (same URL and spool dir) resends it."""
        if status not in STATUSES:
            raise InvalidInput(f"finish status must be one of {', '.join(STATUSES)}, got {status!r}"
                               + (" (a cancelled run is 'killed' now)" if str(status) == "cancelled" else ""))
        self.system_sampler.stop(1.0)  # its last sample is buffered before the finish; none comes after it
        with self._cond:
            if self.status is not None:
                raise RunClosed(f"run {self.run_id} was already finished ({self.status})")
            self.status = status
        self.batcher.close(self.finish_timeout_s if timeout_s is None else timeout_s)  # points become records
        with self._cond:
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
            left = self._queued - self._ended
            if left:
                self._abandon = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        self.hub._forget(self)
        if left:
            why = f"the hub refuses the token ({self.auth_error})" if self.auth_error else \
                "the hub did not take everything in time"
            log.warning("run %s: %s; %d record(s) are spooled in %s and will be resent by the next Hub",
                        self.run_id, why, left, self.spool.records_path)
        elif self.rejected:
            log.warning("run %s ended, but the hub refused %d record(s) (%d point(s)); see run.rejected and %s",
                        self.run_id, len(self.rejected), sum(r.points for r in self.rejected),
                        self.spool.rejected_path)
        return delivered

    @property
    def pending(self) -> int:
        """Records (batches, uploads, the finish) not delivered yet, plus one for unsent buffered points."""
        with self._cond:
            return self._queued - self._ended + (1 if self.batcher.pending else 0)

    @property
    def points_logged(self) -> int:
        """Metric points logged to this run so far (the system sampler's included)."""
        return self.batcher.points_logged

    @property
    def next_step(self) -> int:
        """The step the next log_metrics call without one takes."""
        return self.batcher.next_step

    def _check_open(self) -> None:
        if self.status is not None:
            raise RunClosed(f"run {self.run_id} is finished ({self.status}): nothing more can be logged to it")
