"""The API's one error body, `{"error": {"code", "message", "details"}}`, and the one map from codes to statuses.

Every mlhub error carries a stable code (mlhub.errors); `ERROR_CODE_TO_HTTP_STATUS` turns it into an HTTP
status (mlflow's habit). A code not in the map is a server fault (500); bad input never reaches that line.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from nats.errors import Error as NatsError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlhub.errors import EventLogUnavailable, InvalidInput, MlhubError

log = logging.getLogger(__name__)

ERROR_CODE_TO_HTTP_STATUS: dict[str, int] = {
    # 400: the request names something wrong
    "INVALID_PARAMETER_VALUE": 400,
    "INVALID_FILTER": 400,
    "INVALID_PAGE_TOKEN": 400,
    "AMBIGUOUS_RUN_REF": 400,
    "QUERY_REFUSED": 400,
    "QUERY_FAILED": 400,
    "UNSUPPORTED_ARTIFACT_URI": 400,
    # 401 / 403: who is asking
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    # 404: it does not exist
    "NOT_FOUND": 404,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "JOB_NOT_FOUND": 404,
    "MODEL_NOT_FOUND": 404,
    "MODEL_VERSION_NOT_FOUND": 404,
    "ALIAS_NOT_FOUND": 404,
    "ARTIFACT_NOT_FOUND": 404,
    "TOKEN_NOT_FOUND": 404,
    "PLUGIN_NOT_FOUND": 422,
    # 409: it conflicts with the current state
    "CONCURRENCY_CONFLICT": 409,
    "INVALID_STATE": 409,
    "PROMOTION_CONFLICT": 409,
    "IDEMPOTENCY_KEY_REUSED": 409,
    "PARAM_VALUE_CHANGED": 409,
    "TOKEN_NAME_TAKEN": 409,
    # 413: a body or an event over a size limit (the error names the setting)
    "REQUEST_TOO_LARGE": 413,
    # 422: a well-formed body whose content cannot be used (a bad experiment config, a bad event field)
    "INVALID_CONFIG": 422,
    "UNPROCESSABLE": 422,
    "INVALID_METRIC": 422,
    "UNDECLARED_METRIC": 422,
    "LIMIT_EXCEEDED": 422,
    "QUERY_TIMEOUT": 422,
    "QUERY_OUT_OF_MEMORY": 422,
    "ARTIFACT_CHECKSUM_MISMATCH": 422,
    # a promotion whose gate (e.g. val_acc >= 0.9) the version does not meet: the body is well formed, but that
    # version cannot take that alias; retrying the same request cannot succeed until the facts change
    "PROMOTION_GATE_FAILED": 422,
    "RUN_NOT_REGISTRABLE": 422,
    # 429: this API process takes no more of these now (Retry-After says when to try again)
    "TOO_MANY_QUERIES": 429,
    # 5xx: the server side
    "APPEND_REJECTED": 503,
    "NOT_IMPLEMENTED": 501,
    "REGISTRY_GATES_INVALID": 500,
    "EVENT_LOG_UNAVAILABLE": 503,
    # the hub's own NATS user lacks a permission or its credentials were refused: a deployment error
    "EVENT_LOG_PERMISSION_DENIED": 500,
    "EVENT_LOG_UNAUTHORIZED": 503,
    "READ_MODEL_ERROR": 503,
    "METRIC_TABLE_ERROR": 503,
    "ARTIFACT_STORE_UNAVAILABLE": 503,
    "PROJECTION_TIMEOUT": 504,
}


class ApiError(MlhubError):
    """An error raised by the API itself, with its code and optional details for the error body."""

    code = "INVALID_PARAMETER_VALUE"

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code  # type: ignore[misc]  # an instance may narrow its class's code
        self.details = details or {}
        #: Headers of the error response (Retry-After of a 429).
        self.headers = headers


class NotFound(ApiError):
    """The named resource does not exist (404)."""

    code = "RESOURCE_DOES_NOT_EXIST"


class Unauthenticated(ApiError):
    """No bearer token, or one the hub does not know or has revoked (401)."""

    code = "UNAUTHENTICATED"


class PermissionDenied(ApiError):
    """The token's role may not do this (403)."""

    code = "PERMISSION_DENIED"


class ProjectionTimeout(ApiError):
    """A read's min_seq was not reached by the projections in time (504)."""

    code = "PROJECTION_TIMEOUT"


class NotImplementedYet(ApiError):
    """An endpoint whose back end is not in this build (501)."""

    code = "NOT_IMPLEMENTED"


def status_of(error: MlhubError) -> int:
    """The HTTP status of an mlhub error, by its code; InvalidInput without a mapped code is a 400."""
    status = ERROR_CODE_TO_HTTP_STATUS.get(error.code)
    if status is not None:
        return status
    return 400 if isinstance(error, InvalidInput) else 500


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one error body shape."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON response with the one error body shape."""
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def _details_of(error: MlhubError) -> dict[str, Any]:
    details: dict[str, Any] = dict(getattr(error, "details", {}) or {})
    problems = getattr(error, "problems", None)  # scheduler.ConfigError: (field path, message) pairs
    if problems:
        details["problems"] = [{"field": path, "message": msg} for path, msg in problems]
    for name in ("expected", "actual", "state"):
        value = getattr(error, name, None)
        if value is not None:
            details[name] = value
    return details


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves the API in the one body shape, with the status its code maps to."""

    @app.exception_handler(MlhubError)
    async def _mlhub_error(request: Request, error: MlhubError) -> JSONResponse:
        status = status_of(error)
        if status >= 500 and status != 501:
            log.error("%s %s -> %d %s: %s", request.method, request.url.path, status, error.code, error)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else getattr(error, "headers", None)
        return error_response(status, error.code, str(error), _details_of(error), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg", "")),
             "type": str(e.get("type", ""))}
            for e in error.errors()
        ]
        first = problems[0] if problems else {"field": "", "message": "invalid request"}
        message = f"{first['field']}: {first['message']}" if first["field"] else str(first["message"])
        status = 400 if all(p["field"].split(".")[0] in ("query", "path", "header") for p in problems) else 422
        return error_response(status, "INVALID_PARAMETER_VALUE", message, {"problems": problems})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}.get(
            error.status_code, "HTTP_ERROR")
        return error_response(error.status_code, code, str(error.detail), None,
                              dict(error.headers) if error.headers else None)

    @app.exception_handler(NatsError)
    async def _event_log_error(request: Request, error: NatsError) -> JSONResponse:
        # The event log's client turns what it knows into EventLogUnavailable; whatever nats error still gets
        # here is the event log failing too (a retry may help), never a bug of the request: 503, not 500.
        log.error("%s %s -> 503: the event log failed: %r", request.method, request.url.path, error)
        return error_response(503, EventLogUnavailable.code, f"the event log failed: {type(error).__name__}: "
                              f"{error}", None, {"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, "INTERNAL_ERROR", f"internal error: {type(error).__name__}")
