"""Restore of a backup (mlhub.eventlog.backup) as the stream, through JetStream's restore API: see that module for
the protocol. Nothing is changed on the server unless the backup passes its checks and the stream is absent; a
restored stream that is not what the manifest says is deleted again."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from mlhub.errors import BackupFailed, EventLogUnavailable, InvalidBackup, RestoreRefused
from mlhub.eventlog.backup import BackupManifest, StateDoc, api_request, describe_error, read_backup
from mlhub.eventlog.client import EventLog

#: Chunks we upload: one round trip each, so large (bounded by the server's max_payload).
RESTORE_CHUNK_BYTES = 1024 * 1024
#: JetStream error code of "stream name already in use, cannot restore".
ERR_RESTORE_EXISTS = 10130


@dataclass(frozen=True)
class RestoreReport:
    """What a restore did: the backup's manifest, the restored state, how long it took, what was adapted."""

    manifest: BackupManifest
    state: StateDoc
    seconds: float
    replicas: int
    changes: list[str]


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
        answer = await api_request(event_log, subject, {"config": config, "state": manifest.state.model_dump()},
                                   request_timeout_s, "the restore request")
    if "error" in answer:
        if answer["error"].get("err_code") == ERR_RESTORE_EXISTS:
            raise RestoreRefused(_exists_message(event_log, await _stream_state(event_log)))
        raise BackupFailed(f"the server refused to restore {spec.name}: {describe_error(answer['error'])}; "
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
                    raise BackupFailed(f"the server stopped the restore: {describe_error(error)}; "
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
        raise BackupFailed(f"the server could not restore {spec.name}: {describe_error(final['error'])}; "
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
