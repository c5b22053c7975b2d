"""MLflow's artifact endpoints: the proxied `mlflow-artifacts` service (upload, download, list) the client uses
for a run whose artifact URI is `mlflow-artifacts:/<experiment>/<run_id>/artifacts`, and `artifacts/list`.
Uploads take the one upload path (api/uploads.py) into mlhub's content-addressed store; downloads the native
API's verified download."""

from __future__ import annotations

import posixpath
import re
from typing import Any

from fastapi import APIRouter, Request, Response

from mlhub.api import queries
from mlhub.api.deps import ReaderDep, StateDep, WriterDep
from mlhub.api.mlflow.common import artifact_root, body, consistent, read, text
from mlhub.api.mlflow.errors import MlflowApiError, MlflowRoute
from mlhub.api.state import AppState
from mlhub.api.uploads import store_upload

router = APIRouter(route_class=MlflowRoute)
artifacts_router = APIRouter(route_class=MlflowRoute)
_RUN_PATH = re.compile(r"^/?(?P<experiment>[^/]+)/(?P<run_id>[A-Za-z0-9_-]{1,128})/artifacts(?:/(?P<path>.*))?$")


def _split(path: str) -> tuple[str, str]:
    """(run id, path inside the run) of an mlflow-artifacts path `<experiment>/<run_id>/artifacts/<path>`."""
    match = _RUN_PATH.match(path)
    if match is None:
        raise MlflowApiError(f"artifact path {path!r} is not one of this hub's: <experiment>/<run_id>/artifacts/...",
                             "RESOURCE_DOES_NOT_EXIST")
    rel = posixpath.normpath(match.group("path") or "") if match.group("path") else ""
    if rel in (".", ""):
        rel = ""
    if rel.startswith("../") or rel == "..":
        raise MlflowApiError(f"artifact path {path!r} leaves the run's artifacts")
    return match.group("run_id"), rel


async def _listing(state: AppState, run_id: str, directory: str) -> list[dict[str, Any]]:
    """The immediate children of a directory of a run's artifacts: files with their size, then folders."""
    rows = await read(state, queries.list_artifacts, run_id)
    prefix = f"{directory.rstrip('/')}/" if directory else ""
    files: dict[str, dict[str, Any]] = {}
    for row in rows:
        path = row["path"]
        if not path.startswith(prefix) or path == directory:
            continue
        head, sep, _ = path[len(prefix):].partition("/")
        full = prefix + head
        files[full] = {"path": full, "is_dir": True} if sep else {"path": full, "is_dir": False,
                                                                   "file_size": row["size_bytes"]}
    return sorted(files.values(), key=lambda f: f["path"])


@artifacts_router.put("/artifacts/{path:path}")
async def upload(path: str, request: Request, state: StateDep, _: WriterDep) -> Any:
    """Store the body as the run's artifact (streamed, hashed, content-addressed, recorded on the open run)."""
    run_id, rel = _split(path)
    if not rel:
        raise MlflowApiError("give a file path inside the run's artifacts")
    kind = "model" if rel.startswith("logged-models/") else "checkpoint" if rel.endswith(".ckpt") else "file"
    await store_upload(state, run_id, request.stream(), path=rel, kind=kind)
    return {}


@artifacts_router.get("/artifacts/{path:path}")
async def download(path: str, state: StateDep, who: ReaderDep) -> Response:
    """A run's artifact, verified against its sha256 as the native download is."""
    from mlhub.api.routes_read import download_artifact

    run_id, rel = _split(path)
    await consistent(state)
    return await download_artifact(run_id, rel, state, who)


@artifacts_router.get("/artifacts")
async def list_proxied(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """The children of `path` (names relative to it), as the mlflow-artifacts service lists them."""
    path = text(await body(request), "path") or ""
    if not path:
        return {"files": []}
    run_id, rel = _split(path)
    children = await _listing(state, run_id, rel)
    strip = len(rel) + 1 if rel else 0
    return {"files": [{**f, "path": f["path"][strip:]} for f in children]}


@artifacts_router.delete("/artifacts/{path:path}")
async def delete(path: str, _: WriterDep) -> Any:
    """Not possible: mlhub's artifacts are part of the run's immutable history."""
    raise MlflowApiError("mlhub does not delete artifacts: they are part of the run's history (docs/mlflow.md)",
                         "NOT_IMPLEMENTED")


@router.get("/artifacts/list")
async def list_artifacts(request: Request, state: StateDep, _: ReaderDep) -> Any:
    """A run's artifacts under `path` (paths from the run's artifact root)."""
    fields = await body(request)
    run_id = text(fields, "run_id") or text(fields, "run_uuid")
    if run_id is None:
        raise MlflowApiError("Missing value for required parameter 'run_id'.")
    row = await read(state, queries.get_run, run_id)
    return {"root_uri": artifact_root(row["run"]["experiment_id"], run_id),
            "files": await _listing(state, run_id, text(fields, "path") or "")}
