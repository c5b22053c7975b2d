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

Only the `admin` user may publish on these subjects (mlhub.eventlog.auth): the other roles are denied.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlhub.errors import BackupFailed, EventLogUnavailable, InvalidBackup, RestoreRefused
from mlhub.eventlog.client import EventLog
from mlhub.eventlog.seals import SEALS_FILTER
from mlhub.events import AuditSealed

FORMAT: Literal["mlhub-event-log-backup"] = "mlhub-event-log-backup"
FORMAT_VERSION: Literal[1] = 1
MANIFEST_FILE = "manifest.json"
SNAPSHOT_FILE = "stream.tar.s2"
#: Chunks the server sends (it clamps to 1 KiB..1 MiB); 32 of them fill its default 8 MiB window.
SNAPSHOT_CHUNK_BYTES = 256 * 1024
#: Chunks we upload on restore: one round trip each, so large (bounded by the server's max_payload).
RESTORE_CHUNK_BYTES = 1024 * 1024
#: JetStream error code of "stream name already in use, cannot restore".
ERR_RESTORE_EXISTS = 10130
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


@dataclass(frozen=True)
class RestoreReport:
    """What a restore did: the backup's manifest, the restored state, how long it took, what was adapted."""

    manifest: BackupManifest
    state: StateDoc
    seconds: float
    replicas: int
    changes: list[str]


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
        with open(scratch / SNAPSHOT_FILE, "wb") as out:
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
        _write_synced(scratch / MANIFEST_FILE, manifest.model_dump_json(indent=2).encode() + b"\n")
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
            response = await _api_request(event_log, subject, request, request_timeout_s, "the snapshot request")
        if "error" in response:
            raise BackupFailed(f"the server refused to snapshot {event_log.spec.name}: "
                               f"{_describe(response['error'])}; nothing was written")
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
    digest = _sha256_of(snapshot)
    if digest != manifest.snapshot.sha256:
        raise InvalidBackup(f"{snapshot} has sha256 {digest}, the manifest says {manifest.snapshot.sha256}: the "
                            "backup is corrupt or was altered; nothing was restored")
    return manifest


# -- restore --------------------------------------------------------------------------------------------------


async def restore_stream(event_log: EventLog, path: Path, *, manifest: BackupManifest | None = None,
                         request_timeout_s: float = 60.0, chunk_timeout_s: float = 60.0,
                         finish_timeout_s: float = 3600.0) -> RestoreReport:
    """Restore the backup at `path` as the stream of `event_log` (connected, its stream not set up). Refused,
    changing nothing, when the backup is not mlhub's or fails its checks (`manifest`: what read_backup(path)
    returned already), or the stream exists. The restored stream's state must equal the manifest's (else it is
    deleted again and BackupFailed says why); the snapshot is hashed again as it is sent."""
    manifest = manifest or read_backup(path)
    spec, nc = event_log.spec, event_log.nc
    if manifest.stream != spec.name:
        raise InvalidBackup(f"{path} is a backup of the stream {manifest.stream!r}, not of mlhub's {spec.name!r}")
    config, changes = _restore_config(manifest, event_log)
    existing = await _stream_state(event_log)
    if existing is not None:
        raise RestoreRefused(_exists_message(event_log, existing))
    subject = f"$JS.API.STREAM.RESTORE.{spec.name}"
    started = time.monotonic()
    with event_log.permission_guard([subject], f"a restore of the stream {spec.name}"):
        answer = await _api_request(event_log, subject, {"config": config, "state": manifest.state.model_dump()},
                                    request_timeout_s, "the restore request")
    if "error" in answer:
        if answer["error"].get("err_code") == ERR_RESTORE_EXISTS:
            raise RestoreRefused(_exists_message(event_log, await _stream_state(event_log)))
        raise BackupFailed(f"the server refused to restore {spec.name}: {_describe(answer['error'])}; "
                           "nothing was changed")
    deliver = str(answer["deliver_subject"])
    chunk_bytes = max(1024, min(RESTORE_CHUNK_BYTES, int(nc.max_payload)))
    hasher = hashlib.sha256()
    finished = False
    try:
        with open(Path(path) / manifest.snapshot.file, "rb") as snapshot:
            while chunk := snapshot.read(chunk_bytes):
                hasher.update(chunk)
                reply = await nc.request(deliver, chunk, timeout=chunk_timeout_s)
                if reply.data:
                    error = json.loads(reply.data).get("error", {})
                    raise BackupFailed(f"the server stopped the restore: {_describe(error)}; "
                                       + await _left_behind(event_log))
        if hasher.hexdigest() != manifest.snapshot.sha256:
            raise InvalidBackup(f"{path / manifest.snapshot.file} changed while it was being restored; "
                                + await _abandon(event_log, deliver))
        finished = True
        final = json.loads((await nc.request(deliver, b"", timeout=finish_timeout_s)).data)
    except nats.errors.TimeoutError as e:
        raise EventLogUnavailable(f"the server did not answer the restore in time ({e!r}); "
                                  + await _abandon(event_log, deliver)) from e
    except asyncio.CancelledError:
        if not finished:
            with contextlib.suppress(Exception):
                await nc.publish(deliver, b"abort")  # no reply subject: the server drops the restore at once
        raise
    if "error" in final:
        raise BackupFailed(f"the server could not restore {spec.name}: {_describe(final['error'])}; "
                           + await _left_behind(event_log))
    state = StateDoc.model_validate(final["state"])
    problems = state_differences(manifest, state)
    if problems:
        with contextlib.suppress(Exception):
            await event_log.js.delete_stream(spec.name)
        raise BackupFailed(f"the restored stream {spec.name} differs from the backup's manifest: "
                           + "; ".join(problems) + "; the restored stream was deleted again")
    await event_log.ensure_stream()  # mlhub accepts it as its stream (and names any setting it would not)
    return RestoreReport(manifest=manifest, state=state, seconds=time.monotonic() - started,
                         replicas=int(config.get("num_replicas", 1)), changes=changes)


def state_differences(manifest: BackupManifest, state: StateDoc) -> list[str]:
    """How a restored state differs from what the backup holds, as sentences (empty: it is the same)."""
    want, extra = manifest.state, manifest.appended_during_backup
    problems = []
    if state.first_seq != want.first_seq:
        problems.append(f"first seq {state.first_seq}, the backup's is {want.first_seq}")
    if extra == 0:
        for name in ("messages", "last_seq", "bytes"):
            if getattr(state, name) != getattr(want, name):
                problems.append(f"{name} {getattr(state, name)}, the backup's is {getattr(want, name)}")
        return problems
    # Events stored while the snapshot ran may be in it, as a contiguous prefix of them.
    if not want.last_seq <= state.last_seq <= want.last_seq + extra:
        problems.append(f"last seq {state.last_seq}, the backup holds {want.last_seq} to {want.last_seq + extra}")
    if state.messages - want.messages != state.last_seq - want.last_seq:
        problems.append(f"{state.messages} messages through seq {state.last_seq}, the backup's {want.messages} "
                        f"through {want.last_seq} leave a gap")
    return problems


def _restore_config(manifest: BackupManifest, event_log: EventLog) -> tuple[dict[str, Any], list[str]]:
    """The backup's stream config with the two settings that belong to the deployment (MLHUB_STREAM_REPLICAS,
    MLHUB_DUPLICATE_WINDOW_S) taken from it, checked against what mlhub requires of its stream."""
    spec = event_log.spec
    config = copy.deepcopy(manifest.config)
    changes = []
    window_ns = round(spec.duplicate_window_s * 1e9)
    for key, value, setting in (("num_replicas", spec.replicas, "MLHUB_STREAM_REPLICAS"),
                                ("duplicate_window", window_ns, "MLHUB_DUPLICATE_WINDOW_S")):
        if config.get(key) != value:
            changes.append(f"{key} {config.get(key)} -> {value} ({setting})")
            config[key] = value
    if config.get("name") != spec.name:
        raise InvalidBackup(f"the backup's stream config names {config.get('name')!r}, not {spec.name!r}")
    problems = spec.conflicts(StreamConfig.from_response(copy.deepcopy(config)))
    if problems:
        raise InvalidBackup("the backup's stream settings are not mlhub's: " + "; ".join(problems))
    return config, changes


async def _stream_state(event_log: EventLog) -> StateDoc | None:
    try:
        info = await event_log.js.stream_info(event_log.spec.name)
    except NotFoundError:
        return None
    s = info.state
    return StateDoc(messages=s.messages, bytes=s.bytes, first_seq=s.first_seq, last_seq=s.last_seq)


def _exists_message(event_log: EventLog, state: StateDoc | None) -> str:
    held = "" if state is None else f" ({state.messages} events, last seq {state.last_seq})"
    return (f"the stream {event_log.spec.name} already exists on {event_log.where}{held}: a restore never replaces "
            "a stream; restore into a server (or a data dir) that does not have it. Nothing was changed")


async def _abandon(event_log: EventLog, deliver: str) -> str:
    """Drop an unfinished restore (a chunk without a reply subject ends it on the server at once)."""
    with contextlib.suppress(Exception):
        await event_log.nc.publish(deliver, b"abort")
        await event_log.nc.flush(timeout=5)
    return await _left_behind(event_log)


async def _left_behind(event_log: EventLog) -> str:
    """What a failed restore left on the server, as the end of its error message."""
    state: StateDoc | None = None
    for _ in range(10):  # the server drops a failed restore asynchronously
        try:
            state = await _stream_state(event_log)
        except Exception:
            return "whether the server kept a partial stream is unknown: check it before restoring again"
        if state is None:
            return "no stream was created"
        await asyncio.sleep(0.5)
    held = "" if state is None else f" ({state.messages} events)"
    return f"the server has a stream {event_log.spec.name} now{held}: check it"


async def _api_request(event_log: EventLog, subject: str, payload: dict[str, Any], timeout_s: float,
                       what: str) -> dict[str, Any]:
    try:
        msg = await event_log.nc.request(subject, json.dumps(payload).encode(), timeout=timeout_s)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as e:
        raise EventLogUnavailable(f"no answer to {what} from {event_log.where} within {timeout_s:g}s "
                                  f"({type(e).__name__}): is JetStream enabled there?") from e
    answer: dict[str, Any] = json.loads(msg.data)
    return answer


def _describe(error: dict[str, Any]) -> str:
    return f"{error.get('description', error)} (code {error.get('code')}, err_code {error.get('err_code')})"


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_IO_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
