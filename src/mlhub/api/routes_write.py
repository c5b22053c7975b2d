"""Write endpoints: jobs (submit, cancel), tracking for scripts no worker runs (create run, log batch, finish),
promotion. Handlers validate, append events and answer with their stream sequences; they never write the
read model (the projectors do)."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
import re
import tempfile
import time
import uuid
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from mlhub.api.auth import Role
from mlhub.api.deps import StateDep, WriterDep
from mlhub.api.errors import ApiError, NotFound, PermissionDenied
from mlhub.api.routes_read import ID_PATTERN, ModelName, RunId
from mlhub.api.schemas import (
    AliasPromote,
    AliasPromoted,
    Appended,
    ArtifactUploaded,
    JobCancel,
    JobCancelled,
    JobCreate,
    JobSubmitted,
    LogBatch,
    RunCreate,
    RunCreated,
    RunFinish,
    RunReproduced,
)
from mlhub.api.state import AppState
from mlhub.errors import ConcurrencyError
from mlhub.events import (
    SUBJECT_PREFIX,
    ArtifactStored,
    DomainEvent,
    Envelope,
    MetricSeries,
    MetricsLogged,
    ParamsLogged,
    RunCancelled,
    RunFailed,
    RunFinished,
    RunStarted,
    TagsSet,
    aggregate_subject_filter,
)
from mlhub.events import RunCreated as RunCreatedEvent

if TYPE_CHECKING:
    from mlhub.registry import GatesConfig

router = APIRouter()

#: Points per MetricsLogged event: ~45 bytes a point keeps an event well under the 1 MiB limit.
POINTS_PER_EVENT = 8_000
_END_EVENTS = ("finished", "failed", "cancelled")


def _invalid(e: ValidationError, where: str) -> ApiError:
    problems = [{"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in e.errors()]
    first = problems[0] if problems else {"field": "", "message": str(e)}
    return ApiError(f"{where}: {first['field']}: {first['message']}", code="UNPROCESSABLE",
                    details={"problems": problems})


def _envelope(state: AppState, event: DomainEvent, correlation_id: str | None = None,
              event_id: uuid.UUID | None = None) -> Envelope:
    if event_id is None:
        return Envelope(event=event, producer=state.settings.producer, correlation_id=correlation_id)
    return Envelope(event=event, producer=state.settings.producer, correlation_id=correlation_id, event_id=event_id)


def batch_event_id(batch_id: uuid.UUID, index: int) -> uuid.UUID:
    """The id of the index-th event appended for a client batch: the same batch resent gets the same ids."""
    return uuid.uuid5(batch_id, f"log-batch/{index}")


# -- jobs ------------------------------------------------------------------------------------------------------

@router.post("/jobs", response_model=JobSubmitted, status_code=201, operation_id="submit_job")
async def submit_job(body: JobCreate, state: StateDep, _: WriterDep) -> Any:
    """Validate an experiment config (as `mlhub submit` does) and queue a job; 422 names each bad field."""
    from mlhub.scheduler import ConfigError, apply_overrides, parse_override, submit, validate_config

    source = "request body"
    try:
        parsed = [parse_override(text, source) for text in body.overrides]
        data = copy.deepcopy(body.config)
        problems = apply_overrides(data, parsed)
        if problems:
            raise ConfigError(source, problems)
        config = validate_config(data, source, parsed)
    except ConfigError as e:
        raise ApiError(str(e), code="INVALID_CONFIG",
                       details={"problems": [{"field": p, "message": m} for p, m in e.problems]}) from e
    result = await submit(state.event_log, config, overrides=[o.text for o in parsed], producer=state.settings.producer)
    return {"job_id": result.job_id, "run_id": result.run_id, "experiment_id": result.experiment_id,
            "seed": result.seed, "seed_source": result.seed_source, "config_sha256": result.config_sha256,
            "seq": result.seqs[-1], "seqs": list(result.seqs)}


@router.post("/jobs/{job_id}/cancel", response_model=JobCancelled, operation_id="cancel_job")
async def cancel_job(job_id: Annotated[str, Path(pattern=ID_PATTERN)], body: JobCancel, state: StateDep,
                     who: WriterDep) -> Any:
    """Cancel a queued or running job (404 unknown, 409 already ended)."""
    from mlhub.scheduler import cancel

    result = await cancel(state.event_log, job_id, body.reason, who.name, producer=state.settings.producer)
    return {"job_id": result.job_id, "previous_status": result.previous_status, "seq": result.seq,
            "run_seq": result.run_seq}


@router.post("/runs/{run_id}/reproduce", response_model=RunReproduced, status_code=201, operation_id="reproduce_run")
async def reproduce_run(run_id: RunId, state: StateDep, who: WriterDep) -> Any:
    """Resubmit a run's recorded config snapshot unchanged (same seed, same sha256) as a new job whose run
    records which run it reproduces; read from the event log (404 unknown run, 409 a run with no snapshot)."""
    from mlhub.scheduler import RunNotFound, reproduce

    try:
        _original, result = await reproduce(state.event_log, run_id, producer=state.settings.producer)
    except RunNotFound as e:
        raise NotFound(str(e), details={"run_id": run_id}) from e
    return {"job_id": result.job_id, "run_id": result.run_id, "experiment_id": result.experiment_id,
            "seed": result.seed, "seed_source": result.seed_source, "config_sha256": result.config_sha256,
            "seq": result.seqs[-1], "seqs": list(result.seqs), "reproduces_run_id": run_id}


# -- tracking ----------------------------------------------------------------------------------------------------

async def _ensure_experiment(state: AppState, name: str) -> tuple[str, int | None]:
    from mlhub.scheduler.errors import ExperimentNameTaken
    from mlhub.scheduler.service import ensure_experiment, experiment_id_for

    experiment_id = experiment_id_for(name)
    try:
        seq = await ensure_experiment(state.event_log, experiment_id, name, lambda e: _envelope(state, e))
    except ExperimentNameTaken as e:  # the name's id is taken by another experiment: a conflict, 409
        raise ApiError(str(e), code="CONCURRENCY_CONFLICT") from None
    return experiment_id, seq


@router.post("/runs", response_model=RunCreated, status_code=201, operation_id="create_run")
async def create_run(body: RunCreate, state: StateDep, _: WriterDep) -> Any:
    """Create (and start) a run of a script that no worker runs; the experiment is created when new."""
    if not re.search(r"\S", body.experiment):
        raise ApiError("experiment: must not be blank", details={"field": "experiment"})
    # With a request_id the run id and every event id are derived from it: a retry appends the same events
    # under the same ids, which the log stores once (dedup within the window, the version check after it).
    run_id = uuid.uuid5(body.request_id, "run").hex if body.request_id else uuid.uuid4().hex
    try:
        events: list[DomainEvent] = [RunCreatedEvent(run_id=run_id, experiment_id="placeholder",
                                                     name=body.name or f"run-{run_id[:8]}", source="sdk")]
        if body.params:
            events.append(ParamsLogged(run_id=run_id, params=body.params))
        if body.tags:
            events.append(TagsSet(run_id=run_id, tags=body.tags))
    except ValidationError as e:
        raise _invalid(e, "run") from e
    experiment_id, created_seq = await _ensure_experiment(state, body.experiment)
    events[0] = events[0].model_copy(update={"experiment_id": experiment_id})
    events.append(RunStarted(run_id=run_id, attempt=1))
    seqs = [created_seq] if created_seq is not None else []
    version = 0
    for index, event in enumerate(events):
        event_id = uuid.uuid5(body.request_id, f"create-run/{index}") if body.request_id else None
        version = (await state.event_log.append(_envelope(state, event, event_id=event_id),
                                                expected_version=version)).seq
        seqs.append(version)
    return {"run_id": run_id, "experiment_id": experiment_id, "seq": seqs[-1], "seqs": seqs}


async def _open_run(state: AppState, run_id: str) -> None:
    """NotFound unless the run was created; INVALID_STATE when it has ended."""
    base = f"{SUBJECT_PREFIX}.run.{run_id}"
    created, *ended = await asyncio.gather(
        state.event_log.last_sequence(f"{base}.created"),
        *(state.event_log.last_sequence(f"{base}.{name}") for name in _END_EVENTS))
    if not created:
        raise NotFound(f"no run {run_id!r} was created", details={"run_id": run_id})
    for name, seq in zip(_END_EVENTS, ended, strict=True):
        if seq:
            raise ApiError(f"run {run_id} has ended ({name}, seq {seq}): nothing more can be logged to it",
                           code="INVALID_STATE", details={"state": name, "seq": seq})


def _metric_events(run_id: str, body: LogBatch) -> tuple[list[MetricsLogged], int]:
    now = int(time.time() * 1000)
    chunks: list[MetricSeries] = []
    for index, batch in enumerate(body.metrics):
        n = len(batch.values)
        for name in ("steps", "epochs", "timestamps"):
            column = getattr(batch, name)
            if column is not None and len(column) != n:
                raise ApiError(f"metrics[{index}] ({batch.key!r}): {name} has {len(column)} entries, values {n}",
                               code="UNPROCESSABLE", details={"field": f"metrics.{index}.{name}"})
        steps = batch.steps if batch.steps is not None else [0] * n
        epochs = batch.epochs if batch.epochs is not None else [0] * n
        stamps = batch.timestamps if batch.timestamps is not None else [now] * n
        try:  # the key and the bounds are checked once, by the event's own model, on the first point
            MetricSeries(key=batch.key, values=(batch.values[0],), steps=(min(steps),), epochs=(min(epochs),),
                         timestamps=(min(stamps),))
        except ValidationError as e:
            raise _invalid(e, f"metrics[{index}] ({batch.key!r})") from e
        for start in range(0, n, POINTS_PER_EVENT):
            end = start + POINTS_PER_EVENT
            # Every column is validated already (floats and ints by LogBatch, key and minima just above).
            chunks.append(MetricSeries.model_construct(
                key=batch.key, values=tuple(batch.values[start:end]), steps=tuple(steps[start:end]),
                epochs=tuple(epochs[start:end]), timestamps=tuple(stamps[start:end])))
    events: list[MetricsLogged] = []
    current: list[MetricSeries] = []
    size = 0
    for chunk in chunks:
        if current and (size + len(chunk.values) > POINTS_PER_EVENT or any(c.key == chunk.key for c in current)):
            events.append(MetricsLogged.model_construct(run_id=run_id, series=tuple(current)))
            current, size = [], 0
        current.append(chunk)
        size += len(chunk.values)
    if current:
        events.append(MetricsLogged.model_construct(run_id=run_id, series=tuple(current)))
    return events, sum(len(c.values) for c in chunks)


@router.post("/runs/{run_id}/log-batch", response_model=Appended, operation_id="log_batch",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/LogBatch"}}}}})
async def log_batch(run_id: RunId, request: Request, state: StateDep, _: WriterDep) -> Any:
    """Log params, tags and metric points (columnar, many per call) to an open run."""
    # The body is parsed by pydantic-core straight from the bytes (Python's json module is the slowest part of
    # a large batch otherwise); errors have the same shape as FastAPI's own validation errors.
    raw = await request.body()
    try:
        body = LogBatch.model_validate_json(raw or b"null")
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from e
    try:
        head: list[DomainEvent] = []
        if body.params:
            head.append(ParamsLogged(run_id=run_id, params=body.params))
        if body.tags:
            head.append(TagsSet(run_id=run_id, tags=body.tags))
    except ValidationError as e:
        raise _invalid(e, "batch") from e
    metric_events, points = _metric_events(run_id, body)
    if not head and not metric_events:
        raise ApiError("the batch is empty: give params, tags or metrics", details={"field": "body"})
    await _open_run(state, run_id)
    # With a batch_id every event's id is derived from it (params/tags first, then metric events, in the order
    # _metric_events cuts them, which depends on the body alone): a resent batch dedups in the stream.
    ids: list[uuid.UUID | None] = [None] * (len(head) + len(metric_events))
    if body.batch_id is not None:
        ids = [batch_event_id(body.batch_id, i) for i in range(len(ids))]
    seqs = [(await state.event_log.append(_envelope(state, e, event_id=i))).seq
            for e, i in zip(head, ids, strict=False)]
    results = await state.event_log.append_many(
        _envelope(state, e, event_id=i) for e, i in zip(metric_events, ids[len(head):], strict=True))
    seqs += [r.seq for r in results]
    return {"seq": max(seqs), "seqs": seqs, "points": points}


@router.post("/runs/{run_id}/finish", response_model=Appended, operation_id="finish_run")
async def finish_run(run_id: RunId, body: RunFinish, state: StateDep, _: WriterDep) -> Any:
    """End an open run: finished, failed (error_type and error say why) or cancelled."""
    try:
        if body.status == "finished":
            event: DomainEvent = RunFinished(run_id=run_id)
        elif body.status == "failed":
            event = RunFailed(run_id=run_id, error_type=body.error_type or "Error", error=body.error or "")
        else:
            event = RunCancelled(run_id=run_id, reason=body.error or "")
    except ValidationError as e:
        raise _invalid(e, "finish") from e
    aggregate = aggregate_subject_filter("run", run_id)
    for _attempt in range(10):  # metric batches appended meanwhile move the version: re-check and retry
        await _open_run(state, run_id)
        version = await state.event_log.last_sequence(aggregate)
        try:
            seq = (await state.event_log.append(_envelope(state, event), expected_version=version)).seq
        except ConcurrencyError:
            continue
        return {"seq": seq, "seqs": [seq]}
    raise ApiError(f"run {run_id} kept changing while it was being finished; retry", code="CONCURRENCY_CONFLICT")


# -- artifacts ---------------------------------------------------------------------------------------------------

Sha256Query = Annotated[str, Query(pattern=r"^[0-9a-f]{64}$", description="sha256 of the body, lowercase hex")]


def artifact_event_id(upload_id: uuid.UUID) -> uuid.UUID:
    """The id of the run.artifact_stored event of a client upload: a resent upload is stored once."""
    return uuid.uuid5(upload_id, "artifact")


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
        description="a client-chosen id: the run.artifact_stored event's id is derived from it, so a resent "
                    "upload is recorded once (within MLHUB_DUPLICATE_WINDOW_S)")] = None,
) -> Any:
    """Store the raw request body as an artifact of an open run: streamed to a temporary file while hashed,
    refused (422) unless its sha256 is the one given, then put in the artifact store (MLHUB_ARTIFACT_URI) and
    recorded with a run.artifact_stored event. Nothing is recorded for a refused upload."""
    from mlhub.artifacts import store_from_settings

    try:  # the path is checked by the event's own model before any byte is read
        ArtifactStored(run_id=run_id, path=path, sha256=sha256, size_bytes=0, uri="pending", kind=kind)
    except ValidationError as e:
        raise _invalid(e, "artifact") from e
    await _open_run(state, run_id)
    uploads = state.settings.data_dir / "uploads"
    await run_in_threadpool(uploads.mkdir, parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=uploads)
    temp = FsPath(temp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                digest.update(chunk)
                size += len(chunk)
                await run_in_threadpool(out.write, chunk)
        actual = digest.hexdigest()
        if actual != sha256:
            raise ApiError(f"artifact {path!r}: the body's sha256 is {actual} ({size} bytes), not {sha256}: "
                           "the file changed or was damaged on the way; nothing was stored",
                           code="ARTIFACT_CHECKSUM_MISMATCH",
                           details={"path": path, "expected": sha256, "received": actual, "size_bytes": size})
        store = store_from_settings(state.settings)
        stored = await run_in_threadpool(store.put_file, temp)
    finally:
        temp.unlink(missing_ok=True)
    event = ArtifactStored(run_id=run_id, path=path, sha256=stored.sha256, size_bytes=stored.size_bytes,
                           uri=stored.uri, kind=kind)
    envelope = _envelope(state, event, event_id=artifact_event_id(upload_id) if upload_id else None)
    result = await state.event_log.append(envelope)
    return {"run_id": run_id, "path": path, "sha256": stored.sha256, "size_bytes": stored.size_bytes, "kind": kind,
            "uri": stored.uri, "event_id": str(envelope.event_id), "duplicate": result.duplicate,
            "seq": result.seq, "seqs": [result.seq]}


# -- registry ----------------------------------------------------------------------------------------------------

@router.post("/models/{model_name}/aliases/{alias}", response_model=AliasPromoted, operation_id="set_model_alias")
async def set_model_alias(model_name: ModelName, alias: Annotated[str, Path(pattern=ID_PATTERN)],
                          body: AliasPromote, state: StateDep, who: WriterDep) -> Any:
    """Point an alias at a version (promotion) through the model registry: the alias must point where the caller
    expects (409 PROMOTION_CONFLICT), the alias's gates must hold (422 PROMOTION_GATE_FAILED); a protected alias
    (e.g. production) needs an admin token."""
    from mlhub.registry import current_alias, promote

    if alias.lower() in state.protected_aliases and (who.role is None or who.role < Role.admin):
        raise PermissionDenied(f"alias {alias!r} is protected: moving it needs an admin token",
                               details={"alias": alias, "required": "admin"})
    gates = registry_gates(state)
    expected = body.expected_current if "expected_current" in body.model_fields_set \
        else await current_alias(state.event_log, model_name, alias)
    result = await promote(state.event_log, model_name, alias, body.version, expected, actor=who.name,
                           reason=body.reason, gates=gates, producer=state.settings.producer)
    return {"model_name": result.model_name, "alias": result.alias, "version": result.version,
            "previous_version": result.previous_version, "changed": result.changed, "seq": result.seq,
            "seqs": [result.seq] if result.seq is not None else [],
            "gates": [{"condition": g.condition, "passed": g.passed, "detail": g.detail} for g in result.gates]}


def registry_gates(state: AppState) -> GatesConfig | None:
    """The promotion gates: MLHUB_REGISTRY_GATES, else configs/registry.yaml in the working directory if it exists
    (as `mlhub models promote`); read per request so an edited file applies without a restart."""
    from pathlib import Path as FilePath

    from mlhub.registry import GatesConfigError, load_gates

    chosen = state.settings.registry_gates
    if chosen is None:
        default = FilePath("configs") / "registry.yaml"
        if not default.is_file():
            return None
        chosen = default
    try:
        return load_gates(chosen)
    except GatesConfigError as e:  # the server's configuration is wrong, not the request
        raise ApiError(f"the promotion gates file cannot be used: {e}", code="REGISTRY_GATES_INVALID") from e
