"""The one upload path into a run's artifacts: the native `POST /runs/{id}/artifacts` and MLflow's proxied
`PUT /api/2.0/mlflow-artifacts/artifacts/...` both stream the body to a temporary file while hashing it, refuse
a body whose sha256 is not the one given (when one is), put it in the content-addressed artifact store and
record `run.artifact_stored` through the tracking service, guarded by the run's version."""

from __future__ import annotations

import hashlib
import os
import tempfile
import unicodedata
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from mlhub.api.errors import ApiError
from mlhub.api.state import AppState
from mlhub.events import ArtifactStored
from mlhub.tracking import Written


@dataclass(frozen=True)
class Uploaded:
    """What an upload stored and recorded."""

    sha256: str
    size_bytes: int
    uri: str
    written: Written


def check_artifact_path(run_id: str, path: str, kind: str) -> None:
    """The path (and kind) checked by the event's own model before any byte is read (422 naming the field);
    control characters (C0, DEL, C1: a newline, a tab, an escape) are refused here, at the upload, so that every
    stored name can be served in a header and shown in a terminal (events stored before keep theirs)."""
    controls = sorted({f"U+{ord(ch):04X}" for ch in path if unicodedata.category(ch) == "Cc"})
    if controls:
        raise ApiError(f"artifact: path: {path[:200]!r} contains control characters ({', '.join(controls)}); "
                       "name the file without them", code="UNPROCESSABLE",
                       details={"problems": [{"field": "path", "message": "contains control characters"}],
                                "characters": controls})
    try:
        ArtifactStored(run_id=run_id, path=path, sha256="0" * 64, size_bytes=0, uri="pending",
                       kind=kind)  # type: ignore[arg-type]  # kind is checked by the model
    except ValidationError as e:
        problems = [{"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in e.errors()]
        raise ApiError(f"artifact: {problems[0]['field']}: {problems[0]['message']}", code="UNPROCESSABLE",
                       details={"problems": problems}) from e


async def store_upload(state: AppState, run_id: str, body: AsyncIterator[bytes], *, path: str, kind: str = "file",
                       sha256: str | None = None, upload_id: uuid.UUID | None = None) -> Uploaded:
    """Store a streamed body as the run's artifact `path` and record it; nothing is recorded for a refused
    upload (a checksum mismatch, a run that ended before the upload finished)."""
    from mlhub.artifacts import store_from_settings

    check_artifact_path(run_id, path, kind)
    await state.tracking.check_open(run_id)
    uploads = state.settings.data_dir / "uploads"
    await run_in_threadpool(uploads.mkdir, parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=uploads)
    temp = Path(temp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in body:
                digest.update(chunk)
                size += len(chunk)
                await run_in_threadpool(out.write, chunk)
        actual = digest.hexdigest()
        if sha256 is not None and actual != sha256:
            raise ApiError(f"artifact {path!r}: the body's sha256 is {actual} ({size} bytes), not {sha256}: "
                           "the file changed or was damaged on the way; nothing was stored",
                           code="ARTIFACT_CHECKSUM_MISMATCH",
                           details={"path": path, "expected": sha256, "received": actual, "size_bytes": size})
        store = store_from_settings(state.settings)
        stored = await run_in_threadpool(store.put_file, temp)
    finally:
        temp.unlink(missing_ok=True)
    written = await state.tracking.record_artifact(run_id, path=path, sha256=stored.sha256,
                                                   size_bytes=stored.size_bytes, uri=stored.uri, kind=kind,
                                                   upload_id=upload_id)
    return Uploaded(stored.sha256, stored.size_bytes, stored.uri, written)
