"""Read endpoints: experiments, runs (search, detail), metrics, series, events (from the log), artifacts, jobs,
models. Reads of the read model run in a worker thread; with min_seq they first wait for the projections."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from mlhub.api import queries
from mlhub.api.auth import Role
from mlhub.api.deps import MinSeq, ReaderDep, StateDep
from mlhub.api.errors import ApiError, NotFound
from mlhub.api.schemas import (
    AliasHistoryPublic,
    ArtifactsPublic,
    CallerPublic,
    CompareSeriesPublic,
    EventsPublic,
    ExperimentPublic,
    ExperimentsPublic,
    JobPublic,
    JobsPublic,
    MetricsPublic,
    ModelPublic,
    ModelsPublic,
    ModelVersionPublic,
    RunDetail,
    RunRefPublic,
    RunsPublic,
    SeriesPublic,
)
from mlhub.api.series import read_series
from mlhub.api.state import AppState
from mlhub.events import aggregate_subject_filter, decode, to_json_dict

router = APIRouter()

ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"
RunId = Annotated[str, Path(pattern=ID_PATTERN, description="a run id")]
ExperimentId = Annotated[str, Path(pattern=ID_PATTERN)]
JobId = Annotated[str, Path(pattern=ID_PATTERN)]
ModelName = Annotated[str, Path(pattern=ID_PATTERN)]
MetricKey = Annotated[str, Path(min_length=1, max_length=250, description="a metric key (may contain '/')")]
MaxPoints = Annotated[int, Query(ge=4, le=100_000, description="most points returned; more are downsampled")]
StepBound = Annotated[int | None, Query(ge=0, le=2**62, description="only points with a step in [min_step, max_step]")]


async def _sql(state: AppState, min_seq: int | None, work: Any, *args: Any, **kwargs: Any) -> Any:
    await state.wait_for_sql(min_seq)

    def run() -> Any:
        with state.engine.connect() as conn:
            return work(conn, *args, **kwargs)

    return await run_in_threadpool(run)


@router.get("/whoami", response_model=CallerPublic, operation_id="whoami")
async def whoami(state: StateDep, who: ReaderDep) -> Any:
    """The caller's role and what it may do (the dashboard shows write actions only to a token that may)."""
    role = who.role
    return {"role": role.name if role is not None else None, "name": who.name,
            "can_write": role is not None and role >= Role.writer, "can_admin": role is not None and role >= Role.admin,
            "protected_aliases": sorted(state.protected_aliases)}


@router.get("/experiments", response_model=ExperimentsPublic, operation_id="list_experiments")
async def list_experiments(state: StateDep, _: ReaderDep, min_seq: MinSeq = None,
                           max_results: Annotated[int, Query(ge=1, le=1000)] = 100,
                           page_token: Annotated[str | None, Query(max_length=4096)] = None) -> Any:
    """Experiments by id, a page at a time."""
    return await _sql(state, min_seq, queries.list_experiments, max_results, page_token)


@router.get("/experiments/{experiment_id}", response_model=ExperimentPublic, operation_id="get_experiment")
async def get_experiment(experiment_id: ExperimentId, state: StateDep, _: ReaderDep, min_seq: MinSeq = None) -> Any:
    """One experiment."""
    return await _sql(state, min_seq, queries.get_experiment, experiment_id)


@router.get("/runs", response_model=RunsPublic, operation_id="search_runs")
async def search_runs(
    state: StateDep, _: ReaderDep, min_seq: MinSeq = None,
    experiment_id: Annotated[list[str] | None, Query(max_length=100)] = None,
    filter: Annotated[str | None, Query(max_length=10_000, description=(  # noqa: A002  (the public name)
        "e.g. metrics.val_acc > 0.9 and params.lr = '0.01' and tags.team = 'vision'"))] = None,
    order_by: Annotated[str | None, Query(max_length=100, description="e.g. 'created_at DESC'")] = None,
    max_results: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: Annotated[str | None, Query(max_length=4096)] = None,
) -> Any:
    """Search runs: filter language, sort, keyset pagination with an opaque page token."""
    await state.wait_for_sql(min_seq)
    # The hot path: a recent stamp and a cached answer need no thread hop and no I/O.
    stamp = state.sql_stamp_if_fresh() if min_seq is None else None
    if stamp is None:
        stamp = await run_in_threadpool(state.sql_stamp, fresh=min_seq is not None)
    key = ("runs", stamp, tuple(experiment_id or ()), filter, order_by, max_results, page_token)
    cached = state.cache.get(key)
    if cached is None:
        result = await _sql(state, None, queries.search_runs, experiment_ids=experiment_id or [],
                            filter_text=filter, order_by=order_by, max_results=max_results, page_token=page_token)
        cached = bytes(JSONResponse(result).body)  # already JSON-ready: no second validation pass
        state.cache.put(key, cached)
    return Response(content=cached, media_type="application/json")


@router.get("/run-lookup", response_model=RunRefPublic, operation_id="lookup_run")
async def lookup_run(
    state: StateDep, _: ReaderDep,
    ref: Annotated[str, Query(min_length=1, max_length=500, description=(
        "a run id, a unique prefix of one, or a run's exact name"))],
    min_seq: MinSeq = None,
) -> Any:
    """The run a reference names (what `mlhub show REF` takes): 404 for none, 400 AMBIGUOUS_RUN_REF with the
    candidates (details.candidates, the newest few) for several."""
    return await _sql(state, min_seq, queries.resolve_run_ref, ref)


@router.get("/runs/{run_id}", response_model=RunDetail, operation_id="get_run")
async def get_run(run_id: RunId, state: StateDep, _: ReaderDep, min_seq: MinSeq = None) -> Any:
    """Everything the read model knows about a run: attributes, params, tags, metrics, artifacts, lineage."""
    return await _sql(state, min_seq, queries.get_run, run_id)


async def _existing_run(state: AppState, run_id: str, min_seq: int | None) -> None:
    if not await _sql(state, min_seq, queries.run_exists, run_id):
        raise NotFound(f"no run {run_id!r}", details={"run_id": run_id})


@router.get("/runs/{run_id}/metrics", response_model=MetricsPublic, operation_id="list_run_metrics")
async def list_run_metrics(run_id: RunId, state: StateDep, _: ReaderDep, min_seq: MinSeq = None) -> Any:
    """A run's metric keys with their summaries (last, min, max, counts)."""
    await _existing_run(state, run_id, min_seq)
    data = await _sql(state, None, queries.metric_summaries, run_id)
    return {"data": data, "count": len(data)}


async def _metric_engine(state: AppState, min_seq: int | None) -> Any:
    """A query engine whose snapshot holds min_seq (waiting for the metric projector first)."""
    force = await state.wait_for_metrics(min_seq)
    engine = None if force else state.metrics.points_if_fresh()  # the hot path: no thread hop
    if engine is None:
        engine = await run_in_threadpool(state.metrics.points, force=force)
    if min_seq is not None and (engine.snapshot.checkpoint if engine.snapshot else 0) < min_seq:
        engine = await run_in_threadpool(state.metrics.points, force=True)  # another request saw it first
    return engine


async def _series(state: AppState, run_id: str, key: str, max_points: int, min_seq: int | None) -> dict[str, Any]:
    engine = await _metric_engine(state, min_seq)
    # One engine is one snapshot of the metric tables: its answers never change, so they are cached with it.
    cache_key = ("series", engine, run_id, key, max_points)
    cached = state.cache.get(cache_key)
    if cached is not None:
        result: dict[str, Any] = json.loads(cached)
        return result
    result = await run_in_threadpool(read_series, engine, run_id, key, max_points)
    state.cache.put(cache_key, bytes(JSONResponse(result).body))
    return result


@router.get("/runs/{run_id}/metrics/{key:path}", response_model=SeriesPublic, operation_id="get_metric_series")
async def get_metric_series(run_id: RunId, key: MetricKey, state: StateDep, _: ReaderDep, min_seq: MinSeq = None,
                            max_points: MaxPoints = 1000, min_step: StepBound = None,
                            max_step: StepBound = None) -> Any:
    """One run's series of one key in step order (optionally only steps in [min_step, max_step]), downsampled to
    max_points keeping each bucket's first, last, minimum and maximum point."""
    engine = await _metric_engine(state, min_seq)
    cache_key = ("series", engine, run_id, key, max_points) + ((min_step, max_step) if (min_step, max_step) != (
        None, None) else ())
    cached = state.cache.get(cache_key)
    if cached is None:
        result = await run_in_threadpool(read_series, engine, run_id, key, max_points, min_step=min_step,
                                         max_step=max_step)
        if result["total_points"] == 0 and not await _sql(state, None, queries.run_exists, run_id):
            raise NotFound(f"no run {run_id!r}", details={"run_id": run_id})
        cached = bytes(JSONResponse(result).body)
        state.cache.put(cache_key, cached)
    return Response(content=cached, media_type="application/json")


@router.get("/metrics/compare", response_model=CompareSeriesPublic, operation_id="compare_metric_series")
async def compare_metric_series(
    state: StateDep, _: ReaderDep,
    run_id: Annotated[list[Annotated[str, Query(pattern=ID_PATTERN)]], Query(min_length=1, max_length=50)],
    key: Annotated[str, Query(min_length=1, max_length=250)],
    min_seq: MinSeq = None, max_points: MaxPoints = 1000,
) -> Any:
    """Several runs' series of one key in one call (each downsampled to max_points)."""
    series = [await _series(state, r, key, max_points, min_seq) for r in dict.fromkeys(run_id)]
    return JSONResponse({"key": key, "series": series})


@router.get("/runs/{run_id}/events", response_model=EventsPublic, operation_id="list_run_events")
async def list_run_events(run_id: RunId, state: StateDep, _: ReaderDep,
                          from_seq: Annotated[int, Query(ge=1, le=2**62)] = 1,
                          limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> Any:
    """The run's events as stored in the event log (the audit trail), from from_seq, at most limit."""
    subject = aggregate_subject_filter("run", run_id)
    last = await state.event_log.last_sequence(subject)
    if last == 0:
        raise NotFound(f"the event log holds no event of run {run_id!r}", details={"run_id": run_id})
    data: list[dict[str, Any]] = []
    next_from: int | None = None
    if from_seq <= last:
        stream = state.event_log.replay_raw(from_seq, subject_filter=subject, until_seq=last)
        try:
            async for stored in stream:
                if len(data) == limit:
                    next_from = stored.seq
                    break
                data.append({"seq": stored.seq, "subject": stored.subject, **to_json_dict(decode(stored.data))})
        finally:
            await stream.aclose()
    return {"data": data, "count": len(data), "next_from_seq": next_from}


@router.get("/runs/{run_id}/artifacts", response_model=ArtifactsPublic, operation_id="list_artifacts")
async def list_artifacts(run_id: RunId, state: StateDep, _: ReaderDep, min_seq: MinSeq = None) -> Any:
    """A run's stored files."""
    await _existing_run(state, run_id, min_seq)
    data = await _sql(state, None, queries.list_artifacts, run_id)
    return {"data": data, "count": len(data)}


@router.get("/runs/{run_id}/artifacts/{path:path}", operation_id="download_artifact",
            response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                 "format": "binary"}}}}})
async def download_artifact(run_id: RunId, path: Annotated[str, Path(min_length=1, max_length=1000)],
                            state: StateDep, _: ReaderDep, min_seq: MinSeq = None) -> StreamingResponse:
    """Download an artifact, streamed. Its hash is checked before the first byte is sent and again while
    streaming (a mismatch aborts the transfer); ETag and X-Mlhub-Sha256 carry the hash to check."""
    from mlhub.artifacts import resolve_object_uri

    row = await _sql(state, min_seq, queries.get_artifact, run_id, path)
    store, sha256 = resolve_object_uri(row["uri"])
    if sha256 != row["sha256"]:
        raise ApiError(f"artifact {path!r} of run {run_id!r}: its URI names object {sha256}, "
                       f"but the run recorded {row['sha256']}", code="ARTIFACT_INTEGRITY_ERROR")
    await run_in_threadpool(store.verify, sha256)

    def chunks() -> Iterator[bytes]:
        with store.open(sha256) as stream:
            while chunk := stream.read(1024 * 1024):
                yield chunk

    return StreamingResponse(chunks(), media_type="application/octet-stream", headers={
        "Content-Length": str(row["size_bytes"]), "ETag": f'"{sha256}"', "X-Mlhub-Sha256": sha256,
        "Content-Disposition": attachment_disposition(path.rsplit("/", 1)[-1])})


def attachment_disposition(filename: str) -> str:
    """`Content-Disposition` of a download, ASCII whatever the name (RFC 6266 with RFC 5987's `filename*`): an
    ASCII fallback (other characters as `_`, no quotes, backslashes or control characters) for old clients,
    and the exact name percent-encoded as UTF-8, which browsers and curl -J prefer."""
    fallback = "".join(ch if " " <= ch <= "~" and ch not in '"\\' else "_" for ch in filename) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


@router.get("/jobs", response_model=JobsPublic, operation_id="list_jobs")
async def list_jobs(state: StateDep, _: ReaderDep, min_seq: MinSeq = None,
                    status: Annotated[list[str] | None, Query(max_length=5, description=(
                        "repeatable: queued, running, succeeded, failed, cancelled"))] = None,
                    max_results: Annotated[int, Query(ge=1, le=1000)] = 100,
                    page_token: Annotated[str | None, Query(max_length=4096)] = None) -> Any:
    """Jobs with their status, worker and attempts, most recently changed first, a page at a time."""
    return await _sql(state, min_seq, queries.list_jobs, status or [], max_results, page_token)


@router.get("/jobs/{job_id}", response_model=JobPublic, operation_id="get_job")
async def get_job(job_id: JobId, state: StateDep, _: ReaderDep, min_seq: MinSeq = None) -> Any:
    """One job: status, attempts, worker, times, error."""
    return await _sql(state, min_seq, queries.get_job, job_id)


@router.get("/models", response_model=ModelsPublic, operation_id="list_models")
async def list_models(state: StateDep, _: ReaderDep, min_seq: MinSeq = None) -> Any:
    """Registered models."""
    data = await _sql(state, min_seq, queries.list_models)
    return {"data": data, "count": len(data)}


@router.get("/models/{model_name}", response_model=ModelPublic, operation_id="get_model")
async def get_model(model_name: ModelName, state: StateDep, _: ReaderDep, min_seq: MinSeq = None) -> Any:
    """A registered model with its versions and aliases."""
    return await _sql(state, min_seq, queries.get_model, model_name)


@router.get("/models/{model_name}/versions/{version}", response_model=ModelVersionPublic,
            operation_id="get_model_version")
async def get_model_version(model_name: ModelName, version: Annotated[int, Path(ge=1, le=2**31 - 1)],
                            state: StateDep, _: ReaderDep, min_seq: MinSeq = None) -> Any:
    """One version of a registered model."""
    return await _sql(state, min_seq, queries.get_model_version, model_name, version)


@router.get("/models/{model_name}/aliases/{alias}/history", response_model=AliasHistoryPublic,
            operation_id="get_alias_history")
async def get_alias_history(model_name: ModelName, alias: Annotated[str, Path(pattern=ID_PATTERN)],
                            state: StateDep, _: ReaderDep, min_seq: MinSeq = None) -> Any:
    """Every change of one alias of a model, oldest first."""
    data = await _sql(state, min_seq, queries.alias_history, model_name, alias)
    return {"model_name": model_name, "alias": alias, "data": data, "count": len(data)}


async def wait_all(state: AppState, min_seq: int | None) -> None:
    """Wait for both projections (used by /query)."""
    await asyncio.gather(state.wait_for_sql(min_seq), state.wait_for_metrics(min_seq))
