"""Tracking endpoints for scripts no worker runs: create a run, log batches, upload artifacts, heartbeat, finish,
end by hand, resume. Thin adapters over `mlhub.tracking.TrackingService`: they parse, check the caller's role,
call one command and serialize its answer; the service checks the whole request before its first append."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from mlhub.api.deps import StateDep, WriterDep
from mlhub.api.routes_read import RunId
from mlhub.api.schemas import (
    Appended,
    ArtifactUploaded,
    FiniteLogBatch,
    LogBatch,
    RunCreate,
    RunCreated,
    RunEnd,
    RunFinish,
    RunResumed,
)
from mlhub.events import SYSTEM_METRIC_PREFIX, RunStatus, as_floats
from mlhub.tracking import InvalidTrackingInput, RequestTooLarge, SeriesInput

router = APIRouter(tags=["tracking"])

Sha256Query = Annotated[str, Query(pattern=r"^[0-9a-f]{64}$", description="sha256 of the body, lowercase hex")]


@router.post("/runs", response_model=RunCreated, status_code=201, operation_id="create_run")
async def create_run(body: RunCreate, state: StateDep, _: WriterDep) -> Any:
    """Create (and start) a run of a script that no worker runs; the experiment is created when new. A retry
    with the same request_id names the same run and stores nothing new (another body: 409)."""
    written = await state.tracking.create_run(body.experiment, name=body.name, params=body.params, tags=body.tags,
                                              request_id=body.request_id)
    return {"run_id": written.run_id, "experiment_id": written.experiment_id, "seq": written.seq,
            "seqs": written.seqs, "duplicate": written.duplicate}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 (nothing read past the limit) when it is larger than `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"the request body is {int(declared)} bytes; the hub takes {limit} "
                              "(MLHUB_API_MAX_BODY_BYTES): split it", details={"limit": "MLHUB_API_MAX_BODY_BYTES",
                                                                               "max": limit})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"the request body is over {limit} bytes (MLHUB_API_MAX_BODY_BYTES): split it",
                                  details={"limit": "MLHUB_API_MAX_BODY_BYTES", "max": limit})
        chunks.append(chunk)
    return b"".join(chunks)


def _per_key_errors(raw: bytes, e: ValidationError) -> InvalidTrackingInput | None:
    """Validation errors inside metrics[i] as one error naming those keys (the SDK drops exactly those)."""
    indices = {err["loc"][1] for err in e.errors() if len(err["loc"]) > 1 and err["loc"][0] == "metrics"
               and isinstance(err["loc"][1], int)}
    if not indices or len(indices) != len({err["loc"][:2] for err in e.errors()}):
        return None  # a problem outside the metrics list, or mixed: the plain validation error says it
    try:
        metrics = json.loads(raw)["metrics"]
        keys = sorted({str(metrics[i].get("key")) for i in indices})
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        return None
    problems = [{"key": str(metrics[err["loc"][1]].get("key")),
                 "message": f"{'.'.join(str(p) for p in err['loc'][2:])}: {err['msg']}"} for err in e.errors()]
    return InvalidTrackingInput(f"metric(s) {', '.join(map(repr, keys))}: {problems[0]['message']}; nothing of "
                                "this batch was stored", details={"keys": keys, "problems": problems[:100]})


@router.post("/runs/{run_id}/log-batch", response_model=Appended, operation_id="log_batch",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/LogBatch"}}}}})
async def log_batch(run_id: RunId, request: Request, state: StateDep, _: WriterDep) -> Any:
    """Log params, tags and metric points (columnar, many per call) to an open run: all stored or none."""
    # The body is parsed by pydantic-core straight from the bytes (Python's json module is the slowest part of
    # a large batch otherwise); errors have the same shape as FastAPI's own validation errors.
    raw = await read_body(request, state.settings.api_max_body_bytes)
    body: LogBatch
    try:
        body = FiniteLogBatch.model_validate_json(raw or b"null")  # numbers only: the fast path
        series = [SeriesInput(m.key, m.values, m.steps, m.epochs, m.timestamps) for m in body.metrics]
    except ValidationError:
        try:
            body = LogBatch.model_validate_json(raw or b"null")
        except ValidationError as e:
            per_key = _per_key_errors(raw, e)
            if per_key is not None:
                raise per_key from e
            raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from e
        series = [SeriesInput(m.key, as_floats(tuple(m.values)), m.steps, m.epochs, m.timestamps)
                  for m in body.metrics]
    written = await state.tracking.log_batch(run_id, params=body.params, tags=body.tags, series=series,
                                             batch_id=body.batch_id)
    return {"seq": written.seq, "seqs": written.seqs, "points": written.points, "duplicate": written.duplicate}


def _status(word: str) -> RunStatus:
    return RunStatus.KILLED if word == "cancelled" else RunStatus(word)


@router.post("/runs/{run_id}/finish", response_model=Appended, operation_id="finish_run")
async def finish_run(run_id: RunId, body: RunFinish, state: StateDep, _: WriterDep) -> Any:
    """End an open run: finished, failed (error_type and error say why) or killed (409 once it ended)."""
    written = await state.tracking.finish(run_id, _status(body.status), error_type=body.error_type, error=body.error)
    return {"seq": written.seq, "seqs": written.seqs}


@router.post("/runs/{run_id}/heartbeat", response_model=Appended, operation_id="run_heartbeat")
async def run_heartbeat(run_id: RunId, state: StateDep, _: WriterDep) -> Any:
    """The run's script is alive (the SDK sends one when it sent nothing else for MLHUB_RUN_HEARTBEAT_S); a run
    silent for MLHUB_RUN_DEAD_AFTER_S is ended as crashed by the reaper. 409 once the run ended."""
    written = await state.tracking.heartbeat(run_id)
    return {"seq": written.seq, "seqs": written.seqs}


@router.post("/runs/{run_id}/end", response_model=Appended, operation_id="end_run")
async def end_run(run_id: RunId, body: RunEnd, state: StateDep, who: WriterDep) -> Any:
    """End a run by hand (a stuck or crashed script's run) as finished, failed or killed; recorded with the
    caller's token name. A job's run whose job is queued or running is refused: cancel the job instead."""
    written = await state.tracking.end_by_hand(run_id, _status(body.status), reason=body.reason, actor=who.name)
    return {"seq": written.seq, "seqs": written.seqs}


@router.post("/runs/{run_id}/resume", response_model=RunResumed, operation_id="resume_run")
async def resume_run(run_id: RunId, state: StateDep, who: WriterDep) -> Any:
    """Resume a crashed run (409 unless it crashed): logging goes on; `last_step` is the highest step the read
    model holds for it, so a client's automatic steps continue after it (system metrics, whose steps are times,
    are not counted)."""
    from mlhub.readmodel import tables as t

    written = await state.tracking.resume(run_id, actor=who.name)

    def last_step() -> int | None:
        summaries = t.metric_summaries.c
        with state.engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.max(summaries.last_step))
                                 .where(summaries.run_id == run_id,
                                        sa.not_(summaries.key.startswith(SYSTEM_METRIC_PREFIX, autoescape=True)))
                                 ).scalar_one_or_none()
        return None if value is None else int(value)

    run = await state.tracking.states.get(run_id)
    return {"run_id": run_id, "experiment_id": run.lifecycle.experiment_id, "seq": written.seq,
            "seqs": written.seqs, "last_step": await run_in_threadpool(last_step)}


@router.post("/runs/{run_id}/artifacts", response_model=ArtifactUploaded, status_code=201,
             operation_id="upload_artifact",
             openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                 "schema": {"type": "string", "format": "binary"}}}}})
async def upload_artifact(
    run_id: RunId, request: Request, state: StateDep, _: WriterDep,
    path: Annotated[str, Query(min_length=1, max_length=1000, description="the artifact's path inside the run")],
    sha256: Sha256Query,
    kind: Annotated[Literal["checkpoint", "model", "onnx", "file"], Query()] = "file",
    upload_id: Annotated[uuid.UUID | None, Query(
        description="a client-chosen id: a resent upload is recorded once; the same id for another file is "
                    "a 409")] = None,
) -> Any:
    """Store the raw request body as an artifact of an open run: streamed to a temporary file while hashed,
    refused (422) unless its sha256 is the one given, put in the artifact store (MLHUB_ARTIFACT_URI), then
    recorded with run.artifact_stored, guarded by the run's version: nothing is recorded for a refused upload
    or once the run has ended (an upload that finishes after run.finished is refused with 409)."""
    from mlhub.api.uploads import store_upload

    stored = await store_upload(state, run_id, request.stream(), path=path, kind=kind, sha256=sha256,
                                upload_id=upload_id)
    written = stored.written
    return {"run_id": run_id, "path": path, "sha256": stored.sha256, "size_bytes": stored.size_bytes, "kind": kind,
            "uri": stored.uri, "event_id": written.event_id, "duplicate": written.duplicate,
            "seq": written.seq, "seqs": written.seqs}
