"""The spool: what could not be sent, kept on local disk until the hub takes it.

One folder per hub URL (`<spool dir>/<sha256(url)[:16]>/`), these files per run:

- `<run_id>.jsonl`: records, one JSON object a line, appended and fsync'd before the sender moves on. A record
  is what one request sends: `{"op": "batch", "id": <batch id>, "at": <unix s>, "run_id", "body": {...}}`
  (a log-batch body carrying its `batch_id`), `{"op": "artifact", "id": <upload id>, "path", "sha256",
  "kind", "blob"}` (the file's bytes copied to `blobs/<sha256>`) or `{"op": "finish", "id", "body"}`.
- `<run_id>.done`: ids of records delivered (or refused for good: `<id> rejected <reason>`), one a line; a
  batch the hub refused some keys of: `<id> split <JSON list of the keys>`. Such a record is read back as its
  rest, under the id `uuid5(<id>, "without-refused")`: a resend of the rest after a crash has the same id.
- `<run_id>.rejected.jsonl`: what the hub refused for good (the data with the hub's status, code and message),
  one JSON object a line, fsync'd; kept for the user (never deleted, never resent).
- `<run_id>.lock`: an exclusive `flock` held by the process that owns the run's records (the run's own
  process while it lives, or a Hub resending them): two processes never send the same file at once.

A record is resent exactly as it was written, so its batch id, and the event ids the API derives from it,
stay the same: a batch that reached the event log before (a lost answer, a crash before `.done` was
written) is recognized there as a duplicate and stored once. That holds within the stream's duplicate window
(MLHUB_DUPLICATE_WINDOW_S, 600 s by default); see docs/sdk.md for what happens past it.
A torn last line (the process died while writing it) is skipped: its points never left the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Record = dict[str, Any]
REJECTED_SUFFIX = ".rejected.jsonl"


def default_spool_dir() -> Path:
    """`~/.mlhub/spool`."""
    return Path.home() / ".mlhub" / "spool"


def hub_folder(root: Path, url: str) -> Path:
    """The spool folder of one hub URL (records are resent only to the hub they were meant for)."""
    return root / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def _append_synced(path: Path, data: bytes) -> None:
    """Append whole lines and fsync. A torn last line (a crash while writing it) is closed with a newline
    first, so it stays one unreadable line of its own and never swallows the next record."""
    with open(path, "ab+") as out:
        end = out.seek(0, os.SEEK_END)
        if end:
            out.seek(end - 1)
            if out.read(1) != b"\n":
                data = b"\n" + data
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RunSpool:
    """The spool files of one run. Not thread-safe: one thread (the run's sender, or a resender) uses it."""

    def __init__(self, folder: Path, run_id: str) -> None:
        self.folder = folder
        self.run_id = run_id
        self.records_path = folder / f"{run_id}.jsonl"
        self.done_path = folder / f"{run_id}.done"
        self.lock_path = folder / f"{run_id}.lock"
        self.rejected_path = folder / f"{run_id}{REJECTED_SUFFIX}"
        self.blobs = folder / "blobs"
        self._lock_fd: int | None = None
        self._read_pos = 0
        self._done: set[str] | None = None
        self._split: dict[str, list[str]] = {}

    # -- ownership ------------------------------------------------------------------------------------------

    def try_lock(self) -> bool:
        """Take the run's lock without waiting; False when another process holds it."""
        if self._lock_fd is not None:
            return True
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def unlock(self) -> None:
        """Release the lock (the files stay for whoever resends them)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- writing --------------------------------------------------------------------------------------------

    def append(self, records: list[Record]) -> None:
        """Append records and fsync them: when this returns they survive a crash of this process."""
        if not records:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        new = not self.records_path.exists()
        data = b"".join(json.dumps(r, separators=(",", ":"), allow_nan=False).encode() + b"\n" for r in records)
        _append_synced(self.records_path, data)
        if new:
            _fsync_dir(self.folder)

    def store_blob(self, source: Path, sha256: str) -> str:
        """Copy a file's bytes into `blobs/<sha256>` (checked while copying); the blob's name."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        target = self.blobs / sha256
        if target.exists():
            return target.name
        temp = self.blobs / f".{sha256}.{os.getpid()}.part"
        digest = hashlib.sha256()
        with open(source, "rb") as src, open(temp, "wb") as out:
            while chunk := src.read(1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            temp.unlink(missing_ok=True)
            raise ValueError(f"{source} changed after it was logged: its sha256 is now {digest.hexdigest()}, "
                             f"not {sha256}")
        os.replace(temp, target)
        _fsync_dir(self.blobs)
        return target.name

    def mark_done(self, record_id: str, rejected: str | None = None) -> None:
        """Record that a record was delivered (or refused for good, with the reason)."""
        line = record_id if rejected is None else f"{record_id} rejected {' '.join(rejected.split())[:500]}"
        _append_synced(self.done_path, line.encode() + b"\n")
        self._done_ids().add(record_id)

    def mark_split(self, record_id: str, keys: list[str]) -> None:
        """Record that the hub refused these keys of a batch: from now on the record is read back as its rest
        (`without_keys`), which is what is sent next."""
        line = f"{record_id} split {json.dumps(keys, separators=(',', ':'), ensure_ascii=True)}"
        _append_synced(self.done_path, line.encode() + b"\n")
        self._done_ids()
        self._split[record_id] = keys

    def append_rejected(self, entry: dict[str, Any]) -> None:
        """Append what the hub refused for good to `<run_id>.rejected.jsonl` (fsync'd)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        new = not self.rejected_path.exists()
        _append_synced(self.rejected_path, json.dumps(entry, separators=(",", ":"), allow_nan=False,
                                                      default=str).encode() + b"\n")
        if new:
            _fsync_dir(self.folder)

    # -- reading --------------------------------------------------------------------------------------------

    def _done_ids(self) -> set[str]:
        if self._done is None:
            self._done = set()
            self._split = {}
            with contextlib.suppress(FileNotFoundError), open(self.done_path, "rb") as f:
                for raw in f:
                    if not raw.endswith(b"\n"):  # a torn last line marks nothing
                        continue
                    record_id, _, rest = raw.decode(errors="replace").strip().partition(" ")
                    if rest.startswith("split "):
                        with contextlib.suppress(ValueError):
                            self._split[record_id] = [str(k) for k in json.loads(rest[len("split "):])]
                    else:
                        self._done.add(record_id)
        return self._done

    def _resolve(self, record: Record, done: set[str]) -> Record | None:
        """The record still to send for a spooled one: itself, its rest after split keys, or None when done."""
        while True:
            record_id = str(record.get("id"))
            if record_id in done:
                return None
            keys = self._split.get(record_id)
            if keys is None:
                return record
            rest = without_keys(record, keys)
            if rest is None:
                return None
            record = rest

    def next_pending(self) -> Record | None:
        """The oldest record not delivered yet (read from the file onward from the last one returned)."""
        done = self._done_ids()
        try:
            f = open(self.records_path, "rb")
        except FileNotFoundError:
            return None
        with f:
            f.seek(self._read_pos)
            while True:
                raw = f.readline()
                if not raw.endswith(b"\n"):  # end of file, or a torn last line: nothing more to send
                    return None
                try:
                    record: Record = json.loads(raw)
                except ValueError:
                    log.warning("skipping an unreadable line of %s at byte %d", self.records_path, self._read_pos)
                    self._read_pos = f.tell()
                    continue
                pending = self._resolve(record, done)
                if pending is None:
                    self._read_pos = f.tell()
                    continue
                return pending

    def advance(self) -> None:
        """Step past the record `next_pending` returned (after it was marked done)."""
        with open(self.records_path, "rb") as f:
            f.seek(self._read_pos)
            f.readline()
            self._read_pos = f.tell()

    def pending(self) -> Iterator[Record]:
        """Every record not delivered yet, oldest first (does not move the read position)."""
        done = self._done_ids()
        with contextlib.suppress(FileNotFoundError), open(self.records_path, "rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    return
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                pending = self._resolve(record, done)
                if pending is not None:
                    yield pending

    def exists(self) -> bool:
        """Whether the run has a records file."""
        return self.records_path.exists()

    def remove_if_delivered(self) -> bool:
        """Delete the run's files once every record is delivered; True when nothing is left."""
        if next(self.pending(), None) is not None:
            return False
        blobs = {str(r.get("blob")) for r in self._all_records() if r.get("blob")}
        for path in (self.records_path, self.done_path):
            path.unlink(missing_ok=True)
        for name in blobs:
            if not self._blob_used_elsewhere(name):
                (self.blobs / name).unlink(missing_ok=True)
        self.lock_path.unlink(missing_ok=True)
        self._read_pos = 0
        self._done = None
        self._split = {}
        return True

    def _all_records(self) -> Iterator[Record]:
        with contextlib.suppress(FileNotFoundError), open(self.records_path, "rb") as f:
            for raw in f:
                with contextlib.suppress(ValueError):
                    yield json.loads(raw)

    def _blob_used_elsewhere(self, name: str) -> bool:
        for other in self.folder.glob("*.jsonl"):
            if other.name.endswith(REJECTED_SUFFIX):  # refused records are never resent: their blobs can go
                continue
            if other != self.records_path and name.encode() in other.read_bytes():
                return True
        return False


def spooled_runs(folder: Path) -> list[str]:
    """Run ids with a records file in a hub's spool folder, oldest file first."""
    if not folder.is_dir():
        return []
    files = sorted((p for p in folder.glob("*.jsonl") if not p.name.endswith(REJECTED_SUFFIX)),
                   key=lambda p: p.stat().st_mtime)
    return [p.stem for p in files]


def record_keys(record: Record) -> list[str]:
    """The keys a record carries (metric, param and tag keys of a batch; an upload's path)."""
    if record.get("op") == "artifact":
        return [str(record.get("path"))]
    body = record.get("body") or {}
    keys = [str(m.get("key")) for m in body.get("metrics", ())]
    return keys + [str(k) for k in body.get("params", {})] + [str(k) for k in body.get("tags", {})]


def rest_id(record_id: str) -> str:
    """The id of a batch's rest once the hub refused some of its keys (derived, so a resend keeps it)."""
    return str(uuid.uuid5(uuid.UUID(record_id), "without-refused"))


def without_keys(record: Record, keys: list[str]) -> Record | None:
    """A batch record without the series, params and tags of `keys`, under a batch id derived from the old
    one (`uuid5(batch_id, "without-refused")`); None when nothing is left."""
    refused = set(keys)
    body = record["body"]
    rest: dict[str, Any] = {}
    metrics = [m for m in body.get("metrics", ()) if m.get("key") not in refused]
    params = {k: v for k, v in body.get("params", {}).items() if k not in refused}
    tags = {k: v for k, v in body.get("tags", {}).items() if k not in refused}
    for name, part in (("params", params), ("tags", tags), ("metrics", metrics)):
        if part:
            rest[name] = part
    if not rest:
        return None
    new_id = rest_id(str(record["id"]))
    return {**record, "id": new_id, "body": {**rest, "batch_id": new_id}}


def only_keys(record: Record, keys: list[str]) -> dict[str, Any]:
    """The part of a batch's body with the series, params and tags of `keys` (what the hub refused)."""
    wanted = set(keys)
    body = record.get("body") or {}
    part: dict[str, Any] = {}
    metrics = [m for m in body.get("metrics", ()) if m.get("key") in wanted]
    params = {k: v for k, v in body.get("params", {}).items() if k in wanted}
    tags = {k: v for k, v in body.get("tags", {}).items() if k in wanted}
    for name, value in (("params", params), ("tags", tags), ("metrics", metrics)):
        if value:
            part[name] = value
    return part

