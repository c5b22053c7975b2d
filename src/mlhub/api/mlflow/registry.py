"""MLflow's model registry endpoints over mlhub.registry: registered models and versions (create, get, search,
update, delete), tags, aliases (set through `promote`, so gates, protected aliases and the alias history
apply), download URIs. A version's source is an artifact (a file or a directory) of an mlhub run."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request

from mlhub.api import reads
from mlhub.api.auth import Principal, Role
from mlhub.api.deps import ReaderDep, StateDep, WriterDep
from mlhub.api.errors import NotFound, PermissionDenied
from mlhub.api.mlflow import convert
from mlhub.api.mlflow.common import body, integer, key_and_value, key_values, read, text
from mlhub.api.mlflow.errors import MlflowApiError, MlflowRoute
from mlhub.api.state import AppState

router = APIRouter(route_class=MlflowRoute)
_SOURCE = re.compile(r"^mlflow-artifacts:/+[^/]+/(?P<run>[A-Za-z0-9_-]{1,128})/artifacts/(?P<path>.+)$")
_RUNS_SOURCE = re.compile(r"^runs:/(?P<run>[A-Za-z0-9_-]{1,128})/(?P<path>.+)$")
_MODEL_SOURCE = re.compile(r"^models:/(?P<model>m-[A-Za-z0-9_-]+)/?$")
_VERSION_FILTER = re.compile(r"""^\s*(?P<field>name|run_id)\s*=\s*(?P<q>['"])(?P<v>[^'"]*)(?P=q)\s*$""")


def _name(fields: dict[str, Any]) -> str:
    name = text(fields, "name", required=True)
    assert name is not None
    return name


def _version(fields: dict[str, Any]) -> int:
    version = integer(fields, "version", required=True)
    assert version is not None
    return version


async def _model_json(state: AppState, name: str) -> dict[str, Any]:
    model = await read(state, reads.registered_model, name)
    versions = await read(state, reads.model_versions, name=name, fresh=False)
    return convert.registered_model(model, versions[:1])


async def _version_json(state: AppState, name: str, version: int) -> dict[str, Any]:
    found = await read(state, reads.model_versions, name=name, version=version)
    if not found:
        raise NotFound(f"Model Version (name={name}, version={version}) not found")
    return convert.model_version(found[0])


def _check_alias_role(state: AppState, who: Principal, alias: str) -> None:
    if alias.lower() in state.protected_aliases and (who.role is None or who.role < Role.admin):
        raise PermissionDenied(f"alias {alias!r} is protected: moving it needs an admin token")


@router.post("/registered-models/create")
async def create_registered_model(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Create a registered model (RESOURCE_ALREADY_EXISTS when it exists)."""
    from mlhub.registry import create_model

    fields = await body(request)
    name = _name(fields)
    await create_model(state.event_log, name, description=text(fields, "description") or "",
                       tags=key_values(fields, "tags"), producer=state.settings.producer)
    return {"registered_model": await _model_json(state, name)}


@router.get("/registered-models/get")
async def get_registered_model(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """One registered model with its latest version."""
    return {"registered_model": await _model_json(state, _name(await body(request)))}


@router.get("/registered-models/search")
async def search_registered_models(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """Registered models by MLflow's filter (`name = / LIKE / ILIKE '...'`, `tags.<key> ...`), by name."""
    from mlhub.api.mlflow.filters import experiments_filter

    fields = await body(request)
    clauses = experiments_filter(text(fields, "filter"))
    models = await read(state, reads.registered_models)
    chosen = [m for m in models if all(
        reads.clause_matches({"name": m["model_name"]} if c.kind == "attribute" else (m.get("tags") or {}), c)
        for c in clauses)]
    return {"registered_models": [convert.registered_model(m) for m in chosen]}


@router.api_route("/registered-models/get-latest-versions", methods=["GET", "POST"])
async def get_latest_versions(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """The latest version (mlhub has no stages: the latest of all versions, for any stage asked)."""
    name = _name(await body(request))
    await read(state, reads.registered_model, name)
    versions = await read(state, reads.model_versions, name=name, fresh=False)
    return {"model_versions": [convert.model_version(v) for v in versions[:1]]}


@router.patch("/registered-models/update")
async def update_registered_model(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Change a registered model's description."""
    from mlhub.registry import update_model

    fields = await body(request)
    name = _name(fields)
    await update_model(state.event_log, name, description=text(fields, "description") or "",
                       producer=state.settings.producer)
    return {"registered_model": await _model_json(state, name)}


@router.delete("/registered-models/delete")
async def delete_registered_model(request: Request, state: StateDep, who: WriterDep) -> Any:
    """Delete a model with its versions and aliases."""
    from mlhub.registry import delete_model, model_state

    name = _name(await body(request))
    for alias in (await model_state(state.event_log, name)).aliases:
        _check_alias_role(state, who, alias)
    await delete_model(state.event_log, name, actor=who.name, producer=state.settings.producer)
    return {}


@router.post("/registered-models/rename")
async def rename_registered_model(_: WriterDep) -> Any:
    """Not in mlhub: a model's name is its identity in the event log."""
    raise MlflowApiError("mlhub does not rename registered models (a model's name is its id in the event log): "
                         "register the versions under the new name", "NOT_IMPLEMENTED")


@router.post("/registered-models/set-tag")
async def set_registered_model_tag(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Set a tag of a registered model."""
    return await _change_tag(request, state, of_version=False, remove=False)


@router.delete("/registered-models/delete-tag")
async def delete_registered_model_tag(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Remove a tag of a registered model."""
    return await _change_tag(request, state, of_version=False, remove=True)


async def _change_tag(request: Request, state: AppState, *, of_version: bool, remove: bool) -> dict[str, Any]:
    """Set (or remove) one tag of a registered model or, of_version, of one of its versions."""
    from mlhub.registry import update_model

    fields = await body(request)
    key, value = key_and_value(fields)
    await update_model(state.event_log, _name(fields), version=_version(fields) if of_version else None,
                       tags=None if remove else {key: value}, removed=[key] if remove else (),
                       producer=state.settings.producer)
    return {}


async def _source(state: AppState, fields: dict[str, Any]) -> tuple[str, str]:
    """(run id, artifact path) of a new version's source: a logged model, a runs:/ or mlflow-artifacts URI."""
    source = text(fields, "source") or ""
    model_id = text(fields, "model_id")
    match = _MODEL_SOURCE.match(source)
    if model_id or match:
        row = await read(state, reads.logged_model, model_id or (match.group("model") if match else ""))
        return str(row["run_id"]), str(row["artifact_path"])
    for pattern in (_SOURCE, _RUNS_SOURCE):
        found = pattern.match(source)
        if found:
            return found.group("run"), found.group("path").strip("/")
    raise MlflowApiError(f"source {source!r}: mlhub registers artifacts of its runs (models:/<model_id>, "
                         "runs:/<run_id>/<path> or this hub's mlflow-artifacts URI)")


@router.post("/model-versions/create")
async def create_model_version(request: Request, state: StateDep, who: WriterDep) -> Any:
    """Register the next version from a run's artifact (a running run too: MLflow registers while it logs)."""
    from mlhub.registry import create_model, model_state, register, update_model

    fields = await body(request)
    name = _name(fields)
    run_id, path = await _source(state, fields)
    tags = key_values(fields, "tags")
    if any(not k or len(k) > 250 or len(v) > 5000 for k, v in tags.items()):
        raise MlflowApiError("tags: keys of 1 to 250 characters, values of at most 5000")
    if not (await model_state(state.event_log, name)).exists:
        await create_model(state.event_log, name, producer=state.settings.producer)
    result = await register(state.event_log, name, run_id, path, description=text(fields, "description") or "",
                            registered_by=who.name, producer=state.settings.producer, allow_running=True)
    if tags:
        await update_model(state.event_log, name, version=result.version, tags=tags,
                           producer=state.settings.producer)
    return {"model_version": await _version_json(state, name, result.version)}


@router.get("/model-versions/get")
async def get_model_version(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """One model version."""
    fields = await body(request)
    return {"model_version": await _version_json(state, _name(fields), _version(fields))}


@router.get("/model-versions/search")
async def search_model_versions(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """Model versions of a model (`name = '...'`) or of a run (`run_id = '...'`), or all."""
    fields = await body(request)
    flt = text(fields, "filter")
    name = run_id = None
    if flt:
        match = _VERSION_FILTER.match(flt)
        if match is None:
            raise MlflowApiError(f"Invalid filter {flt!r}: mlhub searches model versions by name = '...' or "
                                 "run_id = '...'")
        name, run_id = (match.group("v"), None) if match.group("field") == "name" else (None, match.group("v"))
    found = await read(state, reads.model_versions, name=name, run_id=run_id)
    return {"model_versions": [convert.model_version(v) for v in found[:integer(fields, "max_results") or None]]}


@router.patch("/model-versions/update")
async def update_model_version(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Change a version's description."""
    from mlhub.registry import update_model

    fields = await body(request)
    name, version = _name(fields), _version(fields)
    await update_model(state.event_log, name, version=version, description=text(fields, "description") or "",
                       producer=state.settings.producer)
    return {"model_version": await _version_json(state, name, version)}


@router.delete("/model-versions/delete")
async def delete_model_version(request: Request, state: StateDep, who: WriterDep) -> Any:
    """Delete a version (its aliases are removed with it)."""
    from mlhub.registry import delete_version, model_state

    fields = await body(request)
    name, version = _name(fields), _version(fields)
    for alias, pointed in (await model_state(state.event_log, name)).aliases.items():
        if pointed == version:
            _check_alias_role(state, who, alias)
    await delete_version(state.event_log, name, version, actor=who.name, producer=state.settings.producer)
    return {}


@router.post("/model-versions/transition-stage")
async def transition_stage(_: WriterDep) -> Any:
    """Not in mlhub: stages are deprecated in MLflow; aliases replace them."""
    raise MlflowApiError("mlhub has no model stages (deprecated in MLflow): set an alias instead",
                         "NOT_IMPLEMENTED")


@router.get("/model-versions/get-download-uri")
async def get_download_uri(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """Where a version's files are: its run's artifacts, proxied through this hub."""
    fields = await body(request)
    version = await _version_json(state, _name(fields), _version(fields))
    return {"artifact_uri": version["source"]}


@router.post("/model-versions/set-tag")
async def set_model_version_tag(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Set a tag of a version."""
    return await _change_tag(request, state, of_version=True, remove=False)


@router.delete("/model-versions/delete-tag")
async def delete_model_version_tag(request: Request, state: StateDep, _: WriterDep) -> Any:
    """Remove a tag of a version."""
    return await _change_tag(request, state, of_version=True, remove=True)


@router.post("/registered-models/alias")
async def set_alias(request: Request, state: StateDep, who: WriterDep) -> Any:
    """Point an alias at a version through mlhub.registry.promote: the gates of MLHUB_REGISTRY_GATES (or
    configs/registry.yaml) apply, a protected alias needs an admin token, and the move is in the alias history."""
    from mlhub.api.routes_write import registry_gates
    from mlhub.registry import current_alias, promote

    fields = await body(request)
    name, version = _name(fields), _version(fields)
    alias = text(fields, "alias", required=True)
    assert alias is not None
    _check_alias_role(state, who, alias)
    expected = await current_alias(state.event_log, name, alias)
    await promote(state.event_log, name, alias, version, expected, actor=who.name, reason="set through MLflow",
                  gates=registry_gates(state), producer=state.settings.producer)
    return {}


@router.delete("/registered-models/alias")
async def delete_alias(request: Request, state: StateDep, who: WriterDep) -> Any:
    """Remove an alias (recorded in the alias history)."""
    from mlhub.registry import remove_alias

    fields = await body(request)
    name = _name(fields)
    alias = text(fields, "alias", required=True)
    assert alias is not None
    _check_alias_role(state, who, alias)
    await remove_alias(state.event_log, name, alias, actor=who.name, reason="removed through MLflow",
                       producer=state.settings.producer)
    return {}


@router.get("/registered-models/alias")
async def get_model_version_by_alias(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """The version an alias points to."""
    fields = await body(request)
    name = _name(fields)
    alias = text(fields, "alias", required=True)
    model = await read(state, reads.registered_model, name)
    version = (model.get("aliases") or {}).get(alias)
    if version is None:
        raise NotFound(f"Registered model alias {alias} not found.")
    return {"model_version": await _version_json(state, name, int(version))}
