"""Backup and restore of the stream with JetStream's own snapshot API (nats-server >= 2.12; checked on 2.15.1).

A backup is a directory: `stream.tar.s2`, the snapshot exactly as the server streams it (an S2-compressed tar of
the stream's message blocks, its index and its durable consumers), and `manifest.json` (what was backed up: the
stream's config and state, the snapshot's size and sha256, the last audit seal, mlhub's and the server's
versions, when). Restoring gives the server those blocks back, so every message keeps its sequence, subject,
headers, bytes and store time: audit seals and projector checkpoints, which name stream sequences, stay valid.
Re-publishing the events instead would renumber and re-time them.

Protocol (nats-server's jetstream_api.go, `streamSnapshot` and `processStreamRestore`):
- snapshot: request `$JS.API.STREAM.SNAPSHOT.<stream>` with `{"deliver_subject", "chunk_size", "jsck"}`; the
  answer carries the config and the state when the snapshot began. Chunks arrive on the deliver subject, each
  with a reply subject (`$JS.SNAPSHOT.ACK...`) that must be answered: the server keeps at most a window (8 MiB)
  unacknowledged and gives up after 5 s without an ack. A last short chunk comes without a reply; then an empty
  message ends the stream, with no status or `204` when all went well, `408`/`500` and a description when not.
- restore: request `$JS.API.STREAM.RESTORE.<stream>` with `{"config", "state"}`, refused (10130) when the stream
  exists; the answer names a deliver subject. Each chunk is a request (an empty answer: taken; JSON: the error),
  and an empty request ends the upload; its answer is the stream-create response with the restored state. The
  server unpacks into a scratch directory and moves it into place only when everything arrived: a failed or
  abandoned restore (5 s without a chunk) leaves no stream.

Only the `admin` user may publish on these subjects (mlhub.eventlog.auth): the other roles are denied. This module
takes backups and reads them; `mlhub.eventlog.restore` restores them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import nats.errors
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlhub.errors import BackupFailed, EventLogUnavailable, InvalidBackup
from mlhub.eventlog.auth import write_private
from mlhub.eventlog.client import EventLog
from mlhub.eventlog.seals import SEALS_FILTER
from mlhub.events import AuditSealed

FORMAT: Literal["mlhub-event-log-backup"] = "mlhub-event-log-backup"
FORMAT_VERSION: Literal[1] = 1
MANIFEST_FILE = "manifest.json"
SNAPSHOT_FILE = "stream.tar.s2"
#: Chunks the server sends (it clamps to 1 KiB..1 MiB); 32 of them fill its default 8 MiB window.
SNAPSHOT_CHUNK_BYTES = 256 * 1024
_IO_BYTES = 1024 * 1024


class StateDoc(BaseModel):
    """The stream's state as the server reports it (the fields mlhub checks; the rest is kept as it came)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    messages: int = Field(ge=0)
    bytes: int = Field(ge=0)
    first_seq: int = Field(ge=0)
    last_seq: int = Field(ge=0)


class SnapshotDoc(BaseModel):
    """The snapshot file of a backup: its name in the backup directory, its size and sha256."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    file: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SealDoc(BaseModel):
    """The last audit seal in the stream when the backup was taken (to anchor it outside the system)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seq: int = Field(ge=1)
    last_seq: int = Field(ge=1)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")


class BackupManifest(BaseModel):
    """`manifest.json` of a backup. `state` is the server's state when the snapshot began;
    `appended_during_backup` counts events stored while it ran (0: the snapshot holds exactly `state`; more: it
    holds every event of `state` and may hold up to that many later ones, a consistent prefix of the stream)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["mlhub-event-log-backup"]
    format_version: Literal[1]
    mlhub_version: str
    server_version: str
    created_at: datetime
    seconds: float = Field(ge=0)
    stream: str = Field(min_length=1)
    config: dict[str, Any]
    state: StateDoc
    appended_during_backup: int = Field(ge=0)
    last_seal: SealDoc | None
    snapshot: SnapshotDoc


# -- backup ---------------------------------------------------------------------------------------------------


async def backup_stream(event_log: EventLog, path: Path, *, mlhub_version: str, check_messages: bool = True,
                        request_timeout_s: float = 300.0, idle_timeout_s: float = 60.0) -> BackupManifest:
    """Snapshot the stream into the new directory `path` (refused when it exists and is not empty). Written into
    a scratch directory beside it and renamed at the end: a failed backup leaves nothing at `path`."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InvalidBackup(f"{path} already exists: a backup goes into a new (or empty) directory")
    name = event_log.spec.name
    try:
        await event_log.js.stream_info(name)
    except NotFoundError:
        raise BackupFailed(f"there is no stream {name} on {event_log.where}: nothing to back up") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    scratch.mkdir(mode=0o700)  # the snapshot holds every event (and token hashes): the owner's only
    started = time.monotonic()
    try:
        with _create_private(scratch / SNAPSHOT_FILE) as out:
            response, digest, size = await _receive_snapshot(event_log, out, check_messages=check_messages,
                                                             request_timeout_s=request_timeout_s,
                                                             idle_timeout_s=idle_timeout_s)
            out.flush()
            os.fsync(out.fileno())
        after = await event_log.js.stream_info(name)
        seal = await event_log.last_event(SEALS_FILTER)
        sealed = seal.envelope.event if seal is not None else None
        state = StateDoc.model_validate(response["state"])
        manifest = BackupManifest(
            format=FORMAT, format_version=FORMAT_VERSION, mlhub_version=mlhub_version,
            server_version=str(event_log.nc._server_info.get("version", "?")), created_at=datetime.now(UTC),
            seconds=round(time.monotonic() - started, 3), stream=name, config=response["config"], state=state,
            appended_during_backup=max(0, int(after.state.last_seq) - state.last_seq),
            last_seal=SealDoc(seq=seal.seq, last_seq=sealed.last_seq, digest=sealed.digest)
            if seal is not None and isinstance(sealed, AuditSealed) else None,
            snapshot=SnapshotDoc(file=SNAPSHOT_FILE, bytes=size, sha256=digest),
        )
        write_private(scratch / MANIFEST_FILE, manifest.model_dump_json(indent=2) + "\n")
        os.replace(scratch, path)  # onto a missing or empty directory: atomic
        _fsync_dir(path.parent)
        return manifest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


async def _receive_snapshot(event_log: EventLog, out: Any, *, check_messages: bool, request_timeout_s: float,
                            idle_timeout_s: float) -> tuple[dict[str, Any], str, int]:
    """Ask for a snapshot, write its chunks to `out` acknowledging each; (the server's answer, sha256, size)."""
    nc = event_log.nc
    subject = f"$JS.API.STREAM.SNAPSHOT.{event_log.spec.name}"
    inbox = nc.new_inbox()
    hasher = hashlib.sha256()
    received = [0, 0]  # bytes, chunks
    ended: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    async def on_chunk(msg: Msg) -> None:
        if ended.done():
            return
        if not msg.data:
            ended.set_result(dict(msg.headers or {}))
            return
        try:
            out.write(msg.data)
        except OSError as e:
            ended.set_exception(BackupFailed(f"cannot write the snapshot to {out.name}: {e}"))
            return
        hasher.update(msg.data)
        received[0] += len(msg.data)
        received[1] += 1
        if msg.reply:  # the server's flow control: each acknowledged chunk frees room for the next one
            await nc.publish(msg.reply, b"")

    sub = await nc.subscribe(inbox, cb=on_chunk, pending_msgs_limit=-1, pending_bytes_limit=-1)
    try:
        request = {"deliver_subject": inbox, "chunk_size": SNAPSHOT_CHUNK_BYTES, "jsck": check_messages}
        with event_log.permission_guard([subject], f"a snapshot of the stream {event_log.spec.name}"):
            response = await api_request(event_log, subject, request, request_timeout_s, "the snapshot request")
        if "error" in response:
            raise BackupFailed(f"the server refused to snapshot {event_log.spec.name}: "
                               f"{describe_error(response['error'])}; nothing was written")
        seen = -1
        while not ended.done():  # the server acks-or-gives-up in 5 s; we give up when nothing comes for long
            if received[1] == seen:
                raise BackupFailed(f"the snapshot stalled: nothing arrived for {idle_timeout_s:g}s after "
                                   f"{received[0]} bytes; nothing was written")
            seen = received[1]
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(ended), idle_timeout_s)
        status = ended.result()
        if status.get("Status", "204") != "204":
            raise BackupFailed(f"the server stopped the snapshot after {received[0]} bytes: {status.get('Status')} "
                               f"{status.get('Description', '')}".rstrip() + "; nothing was written")
        return response, hasher.hexdigest(), received[0]
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


# -- reading a backup -----------------------------------------------------------------------------------------


def read_backup(path: Path) -> BackupManifest:
    """The manifest of the backup at `path`, after checking it is mlhub's and the snapshot file's size and sha256
    match it. InvalidBackup names what is wrong."""
    path = Path(path)
    manifest_file = path / MANIFEST_FILE
    if not path.is_dir():
        raise InvalidBackup(f"{path} is not a backup: a backup is the directory `mlhub events backup` writes "
                            f"({MANIFEST_FILE} and {SNAPSHOT_FILE})")
    try:
        document = json.loads(manifest_file.read_text())
    except OSError as e:
        raise InvalidBackup(f"{manifest_file}: cannot read the manifest ({e.strerror or e})") from None
    except ValueError as e:
        raise InvalidBackup(f"{manifest_file} is not JSON: {e}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise InvalidBackup(f"{manifest_file} is not the manifest of an mlhub event-log backup (format is "
                            f"{found!r}, not {FORMAT!r})")
    if document.get("format_version") != FORMAT_VERSION:
        raise InvalidBackup(f"{manifest_file} has format_version {document.get('format_version')!r}; this mlhub "
                            f"reads version {FORMAT_VERSION} (a newer mlhub wrote it?)")
    try:
        manifest = BackupManifest.model_validate(document)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise InvalidBackup(f"{manifest_file} is not a valid manifest: {problems}") from None
    snapshot = path / manifest.snapshot.file
    try:
        size = snapshot.stat().st_size
    except OSError as e:
        raise InvalidBackup(f"{snapshot}: the backup's snapshot file is missing ({e.strerror or e})") from None
    if size != manifest.snapshot.bytes:
        raise InvalidBackup(f"{snapshot} is {size} bytes, the manifest says {manifest.snapshot.bytes}: the backup is "
                            "incomplete or was altered; nothing was restored")
    digest = sha256_of(snapshot)
    if digest != manifest.snapshot.sha256:
        raise InvalidBackup(f"{snapshot} has sha256 {digest}, the manifest says {manifest.snapshot.sha256}: the "
                            "backup is corrupt or was altered; nothing was restored")
    return manifest


async def api_request(event_log: EventLog, subject: str, payload: dict[str, Any], timeout_s: float,
                      what: str) -> dict[str, Any]:
    """The JetStream API's JSON answer to a request (an "error" key when it refused); EventLogUnavailable when
    nothing answers."""
    try:
        msg = await event_log.nc.request(subject, json.dumps(payload).encode(), timeout=timeout_s)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
        raise EventLogUnavailable(f"no answer to {what} from {event_log.where} within {timeout_s:g}s "
                                  f"({type(e).__name__}): is JetStream enabled there?") from e
    answer: dict[str, Any] = json.loads(msg.data)
    return answer


def describe_error(error: dict[str, Any]) -> str:
    """A JetStream API error for a message: its description and codes."""
    return f"{error.get('description', error)} (code {error.get('code')}, err_code {error.get('err_code')})"


def sha256_of(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_IO_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _create_private(path: Path) -> Any:
    """A new file only its owner may read (0600), open for binary writing."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
