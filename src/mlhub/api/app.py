"""The app factory: `create_app(settings)` -> a FastAPI app serving JSON under /api/v1.

The lifespan opens the event log (MLHUB_NATS_URL, or the data dir's embedded server), migrates and opens the
read model, and prepares the DuckDB query engines; it closes them on shutdown. Tests and tools may pass an
already connected EventLog (it is then left open).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from nats.errors import Error as NatsError
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Receive, Scope, Send

import mlhub
from mlhub.api.auth import TokenFeed, load_tokens
from mlhub.api.dashboard import install_dashboard
from mlhub.api.deps import MinSeq, QueryReaderDep, StateDep
from mlhub.api.errors import install_error_handlers
from mlhub.api.routes_read import router as read_router
from mlhub.api.routes_read import wait_all
from mlhub.api.routes_tokens import router as tokens_router
from mlhub.api.routes_tracking import router as tracking_router
from mlhub.api.routes_write import router as write_router
from mlhub.api.schemas import ErrorBody, Health, LogBatch, QueryRequest, QueryResult, Readiness
from mlhub.api.sqlquery import QueryGate, run_query
from mlhub.api.state import SQL_PROJECTOR, AppState, MetricEngines
from mlhub.errors import MlhubError
from mlhub.eventlog import EventLog
from mlhub.settings import Settings
from mlhub.tracking import TrackingService

API_PREFIX = "/api/v1"
#: Longest /readyz waits for the event log before it answers 503 (an orchestrator's probe must not hang).
READY_EVENT_LOG_TIMEOUT_S = 2.0

health_router = APIRouter()
ops_router = APIRouter()


@health_router.get("/healthz", response_model=Health, operation_id="healthz")
async def healthz() -> Any:
    """Liveness: the process serves requests."""
    return {"status": "ok"}


@health_router.get("/readyz", response_model=Readiness, operation_id="readyz",
                responses={503: {"model": Readiness, "description": "not ready: a projection lags too far"}})
async def readyz(state: StateDep) -> Any:
    """Ready when the event log answers, every projector lags less than MLHUB_API_READY_MAX_LAG messages and,
    under `mlhub up`, every part of the hub runs (`parts`: each one's state, pid and restarts)."""
    parts = await run_in_threadpool(hub_parts, state.settings.hub_parts_file)
    down = [p["name"] for p in parts or [] if p.get("state") != "running"]
    bound = state.settings.api_ready_max_lag
    try:
        last = await asyncio.wait_for(state.event_log.last_sequence(), READY_EVENT_LOG_TIMEOUT_S)
    except (MlhubError, NatsError, TimeoutError) as e:  # the event log is down (or restarting): say so, quickly
        body = {"status": "event_log_unavailable", "last_seq": -1, "lag": {}, "max_lag": bound, "parts": parts,
                "error": str(e) or type(e).__name__}
        return JSONResponse(body, status_code=503)
    sql = await run_in_threadpool(state.sql_checkpoint)
    metrics = await run_in_threadpool(state.metrics_checkpoint)
    lag = {SQL_PROJECTOR: max(0, last - sql), "metrics": max(0, last - metrics)}
    ready = all(v <= bound for v in lag.values())
    status = "degraded" if down else "ready" if ready else "lagging"
    body = {"status": status, "last_seq": last, "lag": lag, "max_lag": bound, "parts": parts}
    return JSONResponse(body, status_code=200 if status == "ready" else 503)


def hub_parts(path: Path) -> list[dict[str, Any]] | None:
    """The parts of the `mlhub up` this API runs under (its parts file), or None: no hub, or the file is stale
    (its hub process is gone)."""
    try:
        document = json.loads(path.read_text())
        os.kill(int(document["hub_pid"]), 0)
        return [dict(p) for p in document["parts"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


@ops_router.post("/query", response_model=QueryResult, operation_id="query", responses={
    429: {"model": ErrorBody, "description": "MLHUB_API_QUERY_MAX_CONCURRENT queries already run or wait here "
          "(Retry-After)"}})
async def query(body: QueryRequest, state: StateDep, _: QueryReaderDep, min_seq: MinSeq = None,
                max_rows: Annotated[int | None, Query(ge=1, le=1_000_000)] = None) -> Any:
    """One read-only DuckDB SELECT over the views metrics, runs, params, tags, experiments, metric_summary,
    leaderboard, ...; rows (max_rows, at most MLHUB_API_QUERY_MAX_ROWS) and bytes (MLHUB_API_QUERY_MAX_BYTES)
    are capped, time and memory limited, and at most MLHUB_API_QUERY_MAX_CONCURRENT are taken at once."""
    settings = state.settings
    gate = state.query_gate
    assert gate is not None
    gate.enter()
    try:
        await wait_all(state, min_seq)
        limit = min(body.max_rows or max_rows or settings.api_query_max_rows, settings.api_query_max_rows)
        engine = await run_in_threadpool(state.metrics.full, force=min_seq is not None)
        answer = await asyncio.get_running_loop().run_in_executor(gate.executor, functools.partial(
            run_query, engine, body.sql, max_rows=limit, max_bytes=settings.api_query_max_bytes,
            timeout_s=settings.api_query_timeout_s))
    finally:
        gate.leave()
    return Response(answer, media_type="application/json")


@contextlib.asynccontextmanager
async def open_resources(settings: Settings, event_log: EventLog | None) -> AsyncIterator[tuple[EventLog, Engine]]:
    """The event log (given, or connected here) and the migrated read-model engine, released on exit."""
    from mlhub.eventlog import nats_endpoint
    from mlhub.readmodel import create_engine, migrate

    engine = create_engine(settings.resolved_database_url, pool_size=20, max_overflow=20)
    try:
        await run_in_threadpool(migrate, engine)  # startup: dependencies -> alembic upgrade head -> serve
        if event_log is not None:
            yield event_log, engine
            return
        with nats_endpoint(settings.nats_url, settings.nats_dir, port=settings.nats_port,
                           sync=settings.nats_sync, as_admin=settings.nats_creds is None) as url:
            log = EventLog.from_settings(url, settings, name="mlhub-api")
            await log.connect()
            try:
                await log.ensure_stream()
                yield log, engine
            finally:
                await log.close()
    finally:
        engine.dispose()


def _document_raw_bodies(app: FastAPI) -> None:
    """Add the schemas of bodies that handlers parse themselves (LogBatch) to the OpenAPI components."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            extra = LogBatch.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(extra.pop("$defs", {}))
            components["LogBatch"] = extra
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def tracking_service(settings: Settings, event_log: EventLog) -> TrackingService:
    """The tracking service of an API process, with the deployment's limits and undeclared-metrics mode."""
    from mlhub.tracking import DeclaredMetrics, TrackingLimits

    declared = DeclaredMetrics(event_log) if settings.undeclared_metrics == "reject" else None
    return TrackingService(event_log, producer=settings.producer, limits=TrackingLimits.from_settings(settings),
                           declared_metrics=declared)


class BodySizeLimit:
    """Refuse (413, the API's error body) a request whose declared Content-Length is over the limit, before
    its body is read. Artifact uploads (native and MLflow's proxied PUT) stream to disk and are not limited
    here; log-batch also counts the
    bytes of a body sent without a length (routes_tracking.read_body)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] == "http" and not path.endswith("/artifacts") and "/mlflow-artifacts/artifacts/" not in path:
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                    from mlhub.api.errors import error_response

                    response = error_response(
                        413, "REQUEST_TOO_LARGE", f"the request body is {int(value)} bytes; the hub takes "
                        f"{self.limit} (MLHUB_API_MAX_BODY_BYTES)", {"limit": "MLHUB_API_MAX_BODY_BYTES",
                                                                    "max": self.limit})
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class ActorScope:
    """Each request starts with no actor and leaves none behind (the auth dependency sets the caller's): an
    in-process client (httpx's ASGI transport) runs requests on its own task, whose context would keep it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from mlhub.events import CURRENT_ACTOR

        reset = CURRENT_ACTOR.set(None)
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT_ACTOR.reset(reset)


def create_app(settings: Settings | None = None, *, event_log: EventLog | None = None) -> FastAPI:
    """The mlhub REST API. Constructing it does no I/O; the lifespan connects."""
    settings = settings or Settings()
    tokens = load_tokens(settings)  # a bad token setting fails here, before serving

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(settings, event_log) as (log, engine):
            feed = TokenFeed(log, tokens)
            await feed.start()  # the issued tokens are loaded before the first request, then followed live
            app.state.mlhub = AppState(
                settings=settings, event_log=log, engine=engine, tokens=tokens,
                metrics=MetricEngines(settings, engine), tracking=tracking_service(settings, log),
                protected_aliases=frozenset(a.strip().lower() for a in settings.api_protected_aliases.split(",")
                                            if a.strip()),
                query_gate=QueryGate(settings), gates_file=settings.gates_file(),
            )
            try:
                yield
            finally:
                await feed.stop()
                app.state.mlhub.query_gate.close()

    app = FastAPI(
        title="mlhub", version=mlhub.__version__, lifespan=lifespan,
        description="mlhub's REST API: experiments, runs, metrics, events, artifacts, jobs, models, queries.",
        responses={code: {"model": ErrorBody, "description": text} for code, text in (
            (400, "bad input"), (401, "no, unknown or revoked token"), (403, "role too low"), (404, "not found"),
            (409, "conflicts with the current state"), (422, "unusable body"), (501, "not in this build"),
            (503, "a dependency is unavailable"), (504, "projections did not reach min_seq in time"))},
    )
    install_error_handlers(app)
    _document_raw_bodies(app)
    app.add_middleware(BodySizeLimit, limit=settings.api_max_body_bytes)
    app.add_middleware(ActorScope)
    for router in (health_router, ops_router, read_router, tracking_router, write_router, tokens_router):
        app.include_router(router, prefix=API_PREFIX)
    # /healthz and /readyz also at the root, where orchestrators look (documented once, under /api/v1)
    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["GET"], include_in_schema=False)
    from mlhub.api.mlflow import install_mlflow

    install_mlflow(app)  # MLflow's REST API under /api/2.0 (before the dashboard's catch-all, if any)
    install_dashboard(app)
    return app
