"""MLflow 3's logged models (`mlflow.<flavor>.log_model`) as far as logging and loading a model need them:
create, get, finalize, delete, search, tags, params. A logged model belongs to the run that logs it (MLflow's
source_run_id): it is recorded as run.logged_model_recorded and its files are the run's artifacts under
`logged-models/<model_id>/`. A model logged outside a run is refused."""

from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import APIRouter, Request

from mlhub.api import reads
from mlhub.api.deps import ReaderDep, StateDep, WriterDep
from mlhub.api.mlflow import convert
from mlhub.api.mlflow.common import body, integer, key_values, mlhub_experiment_id, read, strings, text
from mlhub.api.mlflow.errors import MlflowApiError, MlflowRoute
from mlhub.api.state import AppState
from mlhub.events import LoggedModelRecorded

router = APIRouter(route_class=MlflowRoute)
_FILTER = re.compile(r"""^\s*(?P<field>name|source_run_id)\s*=\s*(?P<q>['"])(?P<v>[^'"]*)(?P=q)\s*$""")
_STATUS = {"LOGGED_MODEL_PENDING": "pending", "LOGGED_MODEL_READY": "ready", "LOGGED_MODEL_UPLOAD_FAILED": "failed",
           "1": "pending", "2": "ready", "3": "failed"}


async def _record(state: AppState, row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    current = {"run_id": row["run_id"], "model_id": row["model_id"], "name": row["name"],
               "artifact_path": row["artifact_path"], "status": row["status"], "model_type": row.get("model_type"),
               "params": dict(row.get("params") or {}), "tags": dict(row.get("tags") or {}),
               "deleted": row.get("lifecycle_stage") == "deleted"}
    current.update(changes)
    try:
        event = LoggedModelRecorded(**current)
    except ValueError as e:
        raise MlflowApiError(f"Invalid logged model: {e}") from None
    await state.tracking.record_logged_model(event)
    return {"model": convert.logged_model(await read(state, reads.logged_model, event.model_id))}


@router.post("/logged-models")
async def create_logged_model(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Create a logged model of a run (pending until finalized)."""
    fields = await body(request)
    run_id = text(fields, "source_run_id")
    if not run_id:
        raise MlflowApiError("mlhub keeps a logged model with the run that logs it: log the model inside a run "
                             "(mlflow.start_run()); a model logged outside a run is not supported", "NOT_IMPLEMENTED")
    model_id = f"m-{uuid.uuid4().hex}"
    row = {"run_id": run_id, "model_id": model_id, "name": text(fields, "name") or "model",
           "artifact_path": f"logged-models/{model_id}", "status": "pending",
           "model_type": text(fields, "model_type"), "params": key_values(fields, "params"),
           "tags": key_values(fields, "tags")}
    return await _record(state, row)


@router.get("/logged-models/{model_id}")
async def get_logged_model(model_id: str, state: StateDep, _: ReaderDep) -> Any:
    """One logged model."""
    return {"model": convert.logged_model(await read(state, reads.logged_model, model_id))}


@router.patch("/logged-models/{model_id}")
async def finalize_logged_model(model_id: str, request: Request, state: StateDep, _: WriterDep) -> Any:
    """Mark a logged model ready (or its upload failed)."""
    fields = await body(request)
    status = _STATUS.get(str(fields.get("status")))
    if status is None:
        raise MlflowApiError(f"Invalid status {fields.get('status')!r}: LOGGED_MODEL_READY or "
                             "LOGGED_MODEL_UPLOAD_FAILED")
    return await _record(state, await read(state, reads.logged_model, model_id), status=status)


@router.delete("/logged-models/{model_id}")
async def delete_logged_model(model_id: str, state: StateDep, _: WriterDep) -> Any:
    """Delete a logged model (soft; its files stay the run's artifacts)."""
    await _record(state, await read(state, reads.logged_model, model_id), deleted=True)
    return {}


@router.post("/logged-models/search")
async def search_logged_models(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """Logged models of some experiments, newest first; the filter may name the model (`name = '...'`) and
    the run (`source_run_id = '...'`), joined by AND; order_by is not supported."""
    fields = await body(request)
    wanted: dict[str, str] = {}
    for clause in re.split(r"\s+AND\s+", text(fields, "filter") or "", flags=re.IGNORECASE):
        if not clause.strip():
            continue
        match = _FILTER.match(clause)
        if match is None:
            raise MlflowApiError(f"Invalid filter {clause!r}: mlhub filters logged models by name = '...' and "
                                 "source_run_id = '...'")
        wanted[match.group("field")] = match.group("v")
    found = await read(state, reads.search_logged_models, [mlhub_experiment_id(e) for e in
                                                           strings(fields, "experiment_ids")],
                       min(integer(fields, "max_results", default=100) or 100, 1000), name=wanted.get("name"),
                       run_id=wanted.get("source_run_id"))
    return {"models": [convert.logged_model(m) for m in found]}


@router.patch("/logged-models/{model_id}/tags")
async def set_logged_model_tags(model_id: str, request: Request, state: StateDep, _: WriterDep) -> Any:
    """Set tags of a logged model."""
    tags = key_values(await body(request), "tags")
    row = await read(state, reads.logged_model, model_id)
    await _record(state, row, tags={**(row.get("tags") or {}), **tags})
    return {}


@router.delete("/logged-models/{model_id}/tags/{tag_key:path}")
async def delete_logged_model_tag(model_id: str, tag_key: str, state: StateDep, _: WriterDep) -> Any:
    """Remove a tag of a logged model."""
    row = await read(state, reads.logged_model, model_id)
    await _record(state, row, tags={k: v for k, v in (row.get("tags") or {}).items() if k != tag_key})
    return {}


@router.post("/logged-models/{model_id}/params")
async def log_logged_model_params(model_id: str, request: Request, state: StateDep, _: WriterDep) -> Any:
    """Add params to a logged model."""
    params = key_values(await body(request), "params")
    row = await read(state, reads.logged_model, model_id)
    await _record(state, row, params={**(row.get("params") or {}), **params})
    return {}
