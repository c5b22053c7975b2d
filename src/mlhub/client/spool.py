"""The spool: what could not be sent, kept on local disk until the hub takes it.

One folder per hub URL (`<spool dir>/<sha256(url)[:16]>/`), three files per run:

- `<run_id>.jsonl`: records, one JSON object a line, appended and fsync'd before the sender moves on. A record
  is what one request sends: `{"op": "batch", "id": <batch id>, "at": <unix s>, "run_id", "body": {...}}`
  (a log-batch body carrying its `batch_id`), `{"op": "artifact", "id": <upload id>, "path", "sha256",
  "kind", "blob"}` (the file's bytes copied to `blobs/<sha256>`) or `{"op": "finish", "id", "body"}`.
- `<run_id>.done`: ids of records delivered (or refused for good: `<id> dropped <reason>`), one a line.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Record = dict[str, Any]


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
        self.blobs = folder / "blobs"
        self._lock_fd: int | None = None
        self._read_pos = 0
        self._done: set[str] | None = None

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

    def mark_done(self, record_id: str, dropped: str | None = None) -> None:
        """Record that a record was delivered (or refused for good, with the reason)."""
        line = record_id if dropped is None else f"{record_id} dropped {' '.join(dropped.split())[:500]}"
        _append_synced(self.done_path, line.encode() + b"\n")
        self._done_ids().add(record_id)

    # -- reading --------------------------------------------------------------------------------------------

    def _done_ids(self) -> set[str]:
        if self._done is None:
            self._done = set()
            with contextlib.suppress(FileNotFoundError), open(self.done_path, "rb") as f:
                for raw in f:
                    if raw.endswith(b"\n"):  # a torn last line marks nothing
                        self._done.add(raw.decode(errors="replace").split(" ", 1)[0].strip())
        return self._done

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
                if str(record.get("id")) in done:
                    self._read_pos = f.tell()
                    continue
                return record

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
                with contextlib.suppress(ValueError):
                    record = json.loads(raw)
                    if str(record.get("id")) not in done:
                        yield record

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
        return True

    def _all_records(self) -> Iterator[Record]:
        with contextlib.suppress(FileNotFoundError), open(self.records_path, "rb") as f:
            for raw in f:
                with contextlib.suppress(ValueError):
                    yield json.loads(raw)

    def _blob_used_elsewhere(self, name: str) -> bool:
        for other in self.folder.glob("*.jsonl"):
            if other != self.records_path and name.encode() in other.read_bytes():
                return True
        return False


def spooled_runs(folder: Path) -> list[str]:
    """Run ids with a records file in a hub's spool folder, oldest file first."""
    if not folder.is_dir():
        return []
    files = sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    return [p.stem for p in files]

