"""MLflow's experiments endpoints (create, get, get-by-name, search, update, delete, restore, tags): thin
adapters over the tracking service's experiment commands and the read model's experiment queries."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from mlhub.api import queries, reads
from mlhub.api.deps import ReaderDep, StateDep, WriterDep
from mlhub.api.errors import NotFound
from mlhub.api.mlflow import convert
from mlhub.api.mlflow.common import (
    DEFAULT_EXPERIMENT,
    body,
    key_and_value,
    key_values,
    mlflow_experiment_id,
    mlhub_experiment_id,
    read,
    search_paging,
    strings,
    text,
)
from mlhub.api.mlflow.errors import MlflowRoute
from mlhub.api.mlflow.filters import experiments_filter, experiments_order_by

router = APIRouter(route_class=MlflowRoute)


async def _experiment(state: Any, experiment_id: str) -> dict[str, Any]:
    try:
        row = await read(state, queries.get_experiment, mlhub_experiment_id(experiment_id))
    except NotFound:
        if experiment_id == "0":
            return convert.default_experiment()
        raise NotFound(f"No Experiment with id={experiment_id} exists") from None
    return convert.experiment(row)


@router.post("/experiments/create")
async def create_experiment(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Create an experiment (MLflow's artifact_location is not used: artifacts go to mlhub's store)."""
    fields = await body(request)
    name = text(fields, "name", required=True)
    assert name is not None
    written = await state.tracking.create_experiment(name, tags=key_values(fields, "tags"))
    return {"experiment_id": mlflow_experiment_id(written.experiment_id)}


@router.get("/experiments/get")
async def get_experiment(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """One experiment by id."""
    fields = await body(request)
    experiment_id = text(fields, "experiment_id", required=True)
    assert experiment_id is not None
    return {"experiment": await _experiment(state, experiment_id)}


@router.get("/experiments/get-by-name")
async def get_experiment_by_name(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """One experiment by its current name."""
    name = text(await body(request), "experiment_name", required=True)
    assert name is not None
    try:
        return {"experiment": convert.experiment(await read(state, reads.experiment_by_name, name))}
    except NotFound:
        if name == DEFAULT_EXPERIMENT:
            return {"experiment": convert.default_experiment()}
        raise NotFound(f"Could not find experiment with name '{name}'") from None


@router.api_route("/experiments/search", methods=["GET", "POST"])
async def search_experiments(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """Experiments by MLflow's filter (name, tags.<key>) and order_by, a page at a time."""
    fields = await body(request)
    stages, max_results = search_paging(fields, "view_type")
    found = await read(state, reads.search_experiments, clauses=experiments_filter(text(fields, "filter")),
                       stages=stages, order_by=experiments_order_by(strings(fields, "order_by")),
                       max_results=max_results, page_token=text(fields, "page_token"))
    answer: dict[str, Any] = {"experiments": [convert.experiment(r) for r in found["data"]]}
    if found["next_page_token"]:
        answer["next_page_token"] = found["next_page_token"]
    return answer


async def _id(request: Request, name: str = "experiment_id") -> tuple[dict[str, Any], str]:
    fields = await body(request)
    experiment_id = text(fields, name, required=True)
    assert experiment_id is not None
    return fields, mlhub_experiment_id(experiment_id)


@router.post("/experiments/update")
async def update_experiment(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Rename an experiment."""
    fields, experiment_id = await _id(request)
    new_name = text(fields, "new_name")
    if new_name:
        await state.tracking.rename_experiment(experiment_id, new_name)
    return {}


@router.post("/experiments/delete")
async def delete_experiment(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Delete an experiment (soft)."""
    __, experiment_id = await _id(request)
    await state.tracking.delete_experiment(experiment_id)
    return {}


@router.post("/experiments/restore")
async def restore_experiment(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Restore a deleted experiment."""
    __, experiment_id = await _id(request)
    await state.tracking.restore_experiment(experiment_id)
    return {}


@router.post("/experiments/set-experiment-tag")
async def set_experiment_tag(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Set one tag of an experiment."""
    fields, experiment_id = await _id(request)
    key, value = key_and_value(fields)
    await state.tracking.set_experiment_tags(experiment_id, {key: value})
    return {}


@router.post("/experiments/delete-experiment-tag")
async def delete_experiment_tag(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Remove one tag of an experiment."""
    fields, experiment_id = await _id(request)
    key = text(fields, "key", required=True)
    assert key is not None
    await state.tracking.set_experiment_tags(experiment_id, {}, removed=[key])
    return {}
