"""MLflow's REST API on the hub: `MLFLOW_TRACKING_URI=<hub url>` works for MLflow's client, its fluent API,
Lightning's MLFlowLogger and `models:/` URIs. Thin routers (experiments, runs and metrics, artifacts, model
registry, logged models) over mlhub's tracking service, registry and read queries; errors in MLflow's format.
What works and what does not: docs/mlflow.md."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request

from mlhub.api.mlflow import artifacts, experiments, logged_models, registry, runs
from mlhub.api.mlflow.errors import MlflowRoute, mlflow_error

#: Where MLflow's client calls the hub (and its UI's ajax variant).
PREFIXES = ("/api/2.0", "/ajax-api/2.0")


def _unknown() -> APIRouter:
    router = APIRouter(route_class=MlflowRoute)

    @router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def unknown(path: str, request: Request) -> Any:
        return mlflow_error("ENDPOINT_NOT_FOUND", f"{request.method} {request.url.path}: this MLflow endpoint is "
                            "not served by mlhub (docs/mlflow.md lists what is)")

    return router


def install_mlflow(app: FastAPI) -> None:
    """Serve MLflow's tracking, registry and artifact endpoints under /api/2.0 (and /ajax-api/2.0)."""
    for prefix in PREFIXES:
        for router in (experiments.router, runs.router, artifacts.router, registry.router, logged_models.router):
            app.include_router(router, prefix=f"{prefix}/mlflow", include_in_schema=False, tags=["mlflow"])
        app.include_router(artifacts.artifacts_router, prefix=f"{prefix}/mlflow-artifacts", include_in_schema=False,
                           tags=["mlflow"])
        app.include_router(_unknown(), prefix=f"{prefix}", include_in_schema=False)
