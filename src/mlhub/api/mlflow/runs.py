"""MLflow's runs and metrics endpoints: create, get, update, delete, restore, search, log-metric, log-parameter,
set-tag, delete-tag, log-batch, log-inputs, outputs, metric history. Thin adapters over the tracking service
(every write is the same events as the native API's) and the read model's queries (the one runs search)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from mlhub.api import queries, reads
from mlhub.api.deps import ReaderDep, StateDep, WriterDep
from mlhub.api.errors import NotFound
from mlhub.api.mlflow import convert
from mlhub.api.mlflow.common import (
    DEFAULT_EXPERIMENT,
    body,
    caller_tag,
    consistent,
    integer,
    key_and_value,
    key_values,
    mlhub_experiment_id,
    read,
    search_paging,
    strings,
    text,
)
from mlhub.api.mlflow.errors import MlflowApiError, MlflowRoute
from mlhub.api.mlflow.filters import STATUS_TO_MLHUB, runs_filter, runs_order_by
from mlhub.api.series import read_series
from mlhub.api.state import AppState
from mlhub.events import DatasetVersionRecorded, RunStatus, metric_value
from mlhub.events.bounds import loads_bounded
from mlhub.tracking import RunEnded, SeriesInput, Written

router = APIRouter(route_class=MlflowRoute)
T = TypeVar("T")
#: mlhub keeps one page of at most this many runs; the client follows next_page_token for more.
_MAX_PAGE = 1000
_ALL_POINTS = 10_000_000


def runs_json(conn: Any, run_ids: list[str]) -> list[dict[str, Any]]:
    """Runs as MLflow's Run, in the order given (ids the read model lacks are left out)."""
    rows = reads.run_rows(conn, run_ids)
    ids = [i for i in run_ids if i in rows]
    extras = queries._run_extras(conn, ids)
    metrics = reads.metric_summaries_of(conn, ids)
    inputs = reads.inputs_of(conn, ids)
    models = reads.logged_models_of(conn, ids)
    return [convert.run(rows[i], extras[i]["params"], extras[i]["tags"], metrics[i], inputs[i], models[i])
            for i in ids]


async def get_run_json(state: AppState, run_id: str) -> dict[str, Any]:
    """One run as MLflow's Run, read consistently; RESOURCE_DOES_NOT_EXIST otherwise."""
    found = await read(state, runs_json, [run_id])
    if not found:
        raise NotFound(f"Run '{run_id}' not found")
    return found[0]


async def _run_id(fields: dict[str, Any]) -> str:
    run_id = text(fields, "run_id") or text(fields, "run_uuid")
    if run_id is None:
        raise MlflowApiError("Missing value for required parameter 'run_id'.")
    return run_id


async def write(state: AppState, run_id: str, op: Callable[[], Awaitable[T]]) -> T:
    """A write to a run; a run the reaper ended as crashed (an MLflow client sends no heartbeats, so a quiet
    script's run is ended after MLHUB_RUN_DEAD_AFTER_S) is resumed and the write done again."""
    try:
        return await op()
    except RunEnded as e:
        if e.state != RunStatus.CRASHED:
            raise
    await state.tracking.resume(run_id, actor="mlflow client (write after a crash)")
    return await op()


@router.post("/runs/create")
async def create_run(request: Request, state: StateDep, who: WriterDep) -> Any:
    """Create and start a run in an experiment (MLflow's experiment 0 is mlhub's "Default")."""
    fields = await body(request)
    experiment_id = text(fields, "experiment_id") or "0"
    tags = key_values(fields, "tags")
    user = text(fields, "user_id")
    if user and "mlflow.user" not in tags:
        tags["mlflow.user"] = user
    tags.update(caller_tag(f"{who.user} ({who.name})" if who.user else who.name))
    name = text(fields, "run_name") or tags.get("mlflow.runName")
    if experiment_id == "0":
        written = await state.tracking.create_run(DEFAULT_EXPERIMENT, name=name, tags=tags)
    else:
        written = await state.tracking.create_run(experiment_id, name=name, tags=tags,
                                                  experiment_id=mlhub_experiment_id(experiment_id))
    return {"run": await get_run_json(state, written.run_id)}


@router.get("/runs/get")
async def get_run(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """One run."""
    return {"run": await get_run_json(state, await _run_id(await body(request)))}


@router.post("/runs/update")
async def update_run(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Rename a run and/or end it (FINISHED, FAILED, KILLED; the hub stamps the end time); RUNNING resumes a
    run the reaper ended as crashed."""
    fields = await body(request)
    run_id = await _run_id(fields)
    name = text(fields, "run_name")
    if name:
        await state.tracking.rename_run(run_id, name)
    status = text(fields, "status")
    if status is not None:
        words = STATUS_TO_MLHUB.get(status.upper())
        if words is None:
            raise MlflowApiError(f"Invalid run status {status!r}: RUNNING, SCHEDULED, FINISHED, FAILED or KILLED")
        current = await state.tracking.states.get(run_id, reload=True)
        if words[0] in ("running", "queued"):
            if current.lifecycle.status == RunStatus.CRASHED:
                await state.tracking.resume(run_id, actor="mlflow client")
            elif current.lifecycle.ended:
                raise MlflowApiError(f"run {run_id} has ended ({current.lifecycle.status}): mlhub does not reopen "
                                     "an ended run")
        elif not current.lifecycle.ended or current.lifecycle.status == RunStatus.CRASHED:
            await state.tracking.finish(run_id, RunStatus(words[0]), error_type="MlflowRunFailed",
                                        error="ended as FAILED by the MLflow client", crashed_too=True)
    run = await get_run_json(state, run_id)
    return {"run_info": run["info"]}


@router.post("/runs/delete")
async def delete_run(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Delete a run (soft)."""
    await state.tracking.delete_run(await _run_id(await body(request)))
    return {}


@router.post("/runs/restore")
async def restore_run(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Restore a deleted run."""
    await state.tracking.restore_run(await _run_id(await body(request)))
    return {}


def _series(metrics: list[Any]) -> list[SeriesInput]:
    """MLflow's metrics ([{key, value, timestamp, step}], any key order) as mlhub's columnar series."""
    columns: dict[str, tuple[list[float], list[int], list[int]]] = {}
    for m in metrics:
        if not isinstance(m, dict) or not isinstance(m.get("key"), str):
            raise MlflowApiError("Invalid value for parameter 'metrics': each metric needs a string 'key'")
        key = m["key"]
        col = columns.setdefault(key, ([], [], []))
        try:
            col[0].append(metric_value(m.get("value"), key))
            col[1].append(int(m.get("step") or 0))
            col[2].append(int(m["timestamp"]) if m.get("timestamp") not in (None, "") else int(time.time() * 1000))
        except (TypeError, ValueError) as e:
            raise MlflowApiError(f"Invalid metric {key!r}: {e}") from None
        except Exception as e:  # mlhub's InvalidMetric: the value is not a number
            raise MlflowApiError(f"Invalid metric {key!r}: {e}") from None
    return [SeriesInput(k, v, s, None, ts) for k, (v, s, ts) in columns.items()]


async def _log(state: AppState, run_id: str, *, params: dict[str, str] | None = None,
               tags: dict[str, str] | None = None, metrics: Sequence[Any] = ()) -> Written:
    series = _series(list(metrics))
    if tags and "mlflow.runName" in tags:
        await state.tracking.rename_run(run_id, tags["mlflow.runName"])
    if not params and not tags and not series:
        return Written(run_id)
    return await write(state, run_id, lambda: state.tracking.log_batch(run_id, params=params, tags=tags,
                                                                      series=series))


@router.post("/runs/log-metric")
async def log_metric(request: Request, state: StateDep, _: WriterDep) -> Any:
    """One metric point."""
    fields = await body(request)
    run_id = await _run_id(fields)
    key = text(fields, "key", required=True)
    await _log(state, run_id, metrics=[{"key": key, "value": fields.get("value"), "step": fields.get("step"),
                                        "timestamp": fields.get("timestamp")}])
    return {}


@router.post("/runs/log-parameter")
async def log_parameter(request: Request, state: StateDep, _: WriterDep) -> Any:
    """One param (a param keeps its first value: another value is INVALID_PARAMETER_VALUE, as in MLflow)."""
    run_id, key, value = await _key_value(request)
    await _log(state, run_id, params={key: value})
    return {}


@router.post("/runs/set-tag")
async def set_tag(request: Request, state: StateDep, _: WriterDep) -> Any:
    """One tag (mlflow.runName renames the run too)."""
    run_id, key, value = await _key_value(request)
    await _log(state, run_id, tags={key: value})
    return {}


async def _key_value(request: Request) -> tuple[str, str, str]:
    """(run id, key, value as a string; "" for none) of a one-param or one-tag request."""
    fields = await body(request)
    run_id = await _run_id(fields)
    return (run_id, *key_and_value(fields))


@router.post("/runs/delete-tag")
async def delete_tag(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Remove a tag of an open run (RESOURCE_DOES_NOT_EXIST when it has no such tag)."""
    fields = await body(request)
    run_id = await _run_id(fields)
    key = text(fields, "key", required=True)
    assert key is not None
    run = await get_run_json(state, run_id)
    if key not in {t["key"] for t in run["data"]["tags"]}:
        raise NotFound(f"No tag with name: {key} in run with id {run_id}")
    await write(state, run_id, lambda: state.tracking.delete_tags(run_id, [key]))
    return {}


@router.post("/runs/log-batch")
async def log_batch(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Metrics, params and tags of one run, stored together or not at all."""
    fields = await body(request)
    run_id = await _run_id(fields)
    metrics = fields.get("metrics") or []
    if not isinstance(metrics, list):
        raise MlflowApiError("Invalid value for parameter 'metrics': expected a list")
    await _log(state, run_id, params=key_values(fields, "params"), tags=key_values(fields, "tags"), metrics=metrics)
    return {}


def _dataset_event(run_id: str, item: Any) -> DatasetVersionRecorded:
    if not isinstance(item, dict) or not isinstance(item.get("dataset"), dict):
        raise MlflowApiError("Invalid value for parameter 'datasets': each needs a 'dataset'")
    d = item["dataset"]
    context = next((t.get("value") for t in item.get("tags") or [] if t.get("key") == "mlflow.data.context"), None)
    described = {k: d.get(k) for k in ("name", "digest", "source_type", "source", "schema", "profile")}
    profile = d.get("profile")
    examples = None
    try:
        examples = int(loads_bounded(profile).get("num_rows")) if profile else None
    except (ValueError, TypeError, AttributeError, OverflowError):  # TooDeep is a ValueError
        examples = None
    try:
        return DatasetVersionRecorded(
            run_id=run_id, name=str(d.get("name") or "dataset"),
            fingerprint=hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest(),
            size_bytes=None, num_examples=examples, digest=d.get("digest"), source_type=d.get("source_type"),
            source=d.get("source"), schema_text=d.get("schema"), profile=profile, context=context)
    except ValueError as e:
        raise MlflowApiError(f"Invalid dataset: {e}") from None


@router.post("/runs/log-inputs")
async def log_inputs(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Datasets the run used, recorded as run.dataset_version_recorded (model inputs are not recorded)."""
    fields = await body(request)
    run_id = await _run_id(fields)
    datasets = [_dataset_event(run_id, d) for d in fields.get("datasets") or []]
    if datasets:
        await write(state, run_id, lambda: state.tracking.log_inputs(run_id, datasets))
    return {}


@router.post("/runs/outputs")
async def log_outputs(request: Request, state: StateDep, _: WriterDep) -> Any:
    """A run's model outputs: a model logged by the run is its output already (its record names the run)."""
    fields = await body(request)
    await _run_id(fields)
    return {}


@router.post("/runs/search")
async def search_runs(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """Runs by MLflow's filter and order_by (translated onto mlhub's runs search), a page at a time."""
    fields = await body(request)
    stages, max_results = search_paging(fields, "run_view_type")
    filter_text = runs_filter(text(fields, "filter"))
    if len(stages) == 1:
        filter_text = " and ".join(p for p in (filter_text, f"lifecycle_stage = '{stages[0]}'") if p)
    experiment_ids = [mlhub_experiment_id(e) for e in strings(fields, "experiment_ids")]
    order_by = runs_order_by(strings(fields, "order_by"))

    def search(conn: Any) -> dict[str, Any]:
        page = queries.search_runs(conn, experiment_ids=experiment_ids, filter_text=filter_text, order_by=order_by,
                                   max_results=min(max_results, _MAX_PAGE), page_token=text(fields, "page_token"))
        return {"runs": runs_json(conn, [r["run_id"] for r in page["data"]]), "token": page["next_page_token"]}

    found = await read(state, search)
    answer: dict[str, Any] = {"runs": found["runs"]}
    if found["token"]:
        answer["next_page_token"] = found["token"]
    return answer


async def _points(state: AppState, run_id: str, key: str, max_points: int = _ALL_POINTS,
                  min_step: int | None = None, max_step: int | None = None) -> dict[str, Any]:
    reopen = await consistent(state, metrics=True)
    engine = await run_in_threadpool(state.metrics.points, force=reopen)
    return await run_in_threadpool(read_series, engine, run_id, key, max_points, min_step=min_step,
                                   max_step=max_step)


@router.get("/metrics/get-history")
async def get_metric_history(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """Every point of one metric of a run, in step order (all at once: no page token)."""
    fields = await body(request)
    run_id = await _run_id(fields)
    key = text(fields, "metric_key", required=True)
    assert key is not None
    series = await _points(state, run_id, key)
    if series["total_points"] == 0:
        await get_run_json(state, run_id)  # RESOURCE_DOES_NOT_EXIST for an unknown run
    return {"metrics": [{"key": key, "value": v, "timestamp": ts, "step": s}
                        for s, v, ts in zip(series["steps"], series["values"], series["timestamps"], strict=True)]}


@router.get("/metrics/get-history-bulk-interval")
async def get_metric_history_bulk_interval(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """Several runs' points of one metric in a step range, at most max_results a run, sampled evenly (the
    UI's charts); mlhub keeps each bucket's first, last, minimum and maximum point."""
    fields = await body(request)
    run_ids = strings(fields, "run_ids")
    key = text(fields, "metric_key", required=True)
    assert key is not None
    if not run_ids or len(run_ids) > 100:
        raise MlflowApiError("Invalid value for parameter 'run_ids': 1 to 100 run ids")
    max_results = max(4, min(integer(fields, "max_results", default=320) or 320, 2500))
    start, end = integer(fields, "start_step"), integer(fields, "end_step")
    points: list[dict[str, Any]] = []
    for run_id in run_ids:
        series = await _points(state, run_id, key, max_results, start, end)
        points += [{"key": key, "value": v, "timestamp": ts, "step": s, "run_id": run_id}
                   for s, v, ts in zip(series["steps"], series["values"], series["timestamps"], strict=True)]
    return {"metrics": points}
