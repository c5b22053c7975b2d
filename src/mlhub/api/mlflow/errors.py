"""MLflow's error format on the MLflow routes: `{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": ...}` with
the HTTP status MLflow gives that code (its ERROR_CODE_TO_HTTP_STATUS; the client branches on both). mlhub's
own codes are mapped here, in one table; the routes raise mlhub's errors (or MlflowApiError)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from mlhub.errors import InvalidInput, MlhubError

log = logging.getLogger(__name__)

#: MLflow's status for each of its error codes (mlflow.exceptions.ERROR_CODE_TO_HTTP_STATUS, the ones used).
MLFLOW_STATUS: dict[str, int] = {
    "INTERNAL_ERROR": 500, "NOT_IMPLEMENTED": 501, "TEMPORARILY_UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
    "RESOURCE_CONFLICT": 409, "ENDPOINT_NOT_FOUND": 404, "RESOURCE_DOES_NOT_EXIST": 404, "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401, "BAD_REQUEST": 400, "RESOURCE_ALREADY_EXISTS": 400, "INVALID_PARAMETER_VALUE": 400,
}

#: mlhub's error codes -> MLflow's. Codes not named: INVALID_PARAMETER_VALUE for bad input, else INTERNAL_ERROR.
MLHUB_TO_MLFLOW: dict[str, str] = {
    "RESOURCE_DOES_NOT_EXIST": "RESOURCE_DOES_NOT_EXIST", "NOT_FOUND": "RESOURCE_DOES_NOT_EXIST",
    "MODEL_NOT_FOUND": "RESOURCE_DOES_NOT_EXIST", "MODEL_VERSION_NOT_FOUND": "RESOURCE_DOES_NOT_EXIST",
    "ALIAS_NOT_FOUND": "RESOURCE_DOES_NOT_EXIST", "ARTIFACT_NOT_FOUND": "RESOURCE_DOES_NOT_EXIST",
    "RESOURCE_ALREADY_EXISTS": "RESOURCE_ALREADY_EXISTS",
    "UNAUTHENTICATED": "UNAUTHENTICATED", "PERMISSION_DENIED": "PERMISSION_DENIED",
    # MLflow answers a write to a run that is not active with INVALID_PARAMETER_VALUE (400): a 500 would make
    # the client retry for minutes.
    "INVALID_STATE": "INVALID_PARAMETER_VALUE", "PARAM_VALUE_CHANGED": "INVALID_PARAMETER_VALUE",
    "PROMOTION_GATE_FAILED": "INVALID_PARAMETER_VALUE", "RUN_NOT_REGISTRABLE": "INVALID_PARAMETER_VALUE",
    "PROMOTION_CONFLICT": "RESOURCE_CONFLICT", "CONCURRENCY_CONFLICT": "RESOURCE_CONFLICT",
    "IDEMPOTENCY_KEY_REUSED": "RESOURCE_CONFLICT",
    "EVENT_LOG_UNAVAILABLE": "TEMPORARILY_UNAVAILABLE", "READ_MODEL_ERROR": "TEMPORARILY_UNAVAILABLE",
    "METRIC_TABLE_ERROR": "TEMPORARILY_UNAVAILABLE", "ARTIFACT_STORE_UNAVAILABLE": "TEMPORARILY_UNAVAILABLE",
    "APPEND_REJECTED": "TEMPORARILY_UNAVAILABLE", "PROJECTION_TIMEOUT": "DEADLINE_EXCEEDED",
    "NOT_IMPLEMENTED": "NOT_IMPLEMENTED",
}


class MlflowApiError(MlhubError):
    """An error of the MLflow routes with an MLflow error code."""

    code = "INVALID_PARAMETER_VALUE"

    def __init__(self, message: str, code: str = "INVALID_PARAMETER_VALUE") -> None:
        super().__init__(message)
        self.code = code  # type: ignore[misc]  # an instance may narrow its class's code


def mlflow_error(code: str, message: str, status: int | None = None) -> JSONResponse:
    """MLflow's error body with its status."""
    return JSONResponse({"error_code": code, "message": message}, status_code=status or MLFLOW_STATUS.get(code, 500))


def translate(error: Exception) -> JSONResponse:
    """Any error as MLflow's error body."""
    if isinstance(error, MlhubError):
        code = MLHUB_TO_MLFLOW.get(error.code, error.code if error.code in MLFLOW_STATUS else
                                   "INVALID_PARAMETER_VALUE" if isinstance(error, InvalidInput) else "")
        if not code:
            details = getattr(error, "details", None)
            code = "INVALID_PARAMETER_VALUE" if details is not None else "INTERNAL_ERROR"
        if code == "INTERNAL_ERROR":
            log.error("MLflow API: %s: %s", error.code, error)
        return mlflow_error(code, f"{error} [{error.code}]" if code != error.code else str(error))
    if isinstance(error, RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
        return mlflow_error("INVALID_PARAMETER_VALUE", f"{field}: {first.get('msg', 'invalid request')}".strip(": "))
    if isinstance(error, HTTPException):
        code = {404: "ENDPOINT_NOT_FOUND", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}.get(
            error.status_code, "BAD_REQUEST")
        return mlflow_error(code, str(error.detail), error.status_code)
    log.exception("MLflow API: unexpected error")
    return mlflow_error("INTERNAL_ERROR", f"internal error: {type(error).__name__}")


class MlflowRoute(APIRoute):
    """A route whose every error (auth, validation, mlhub's own) leaves in MLflow's format."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as e:  # noqa: BLE001  (every error is answered, in MLflow's format)
                response = translate(e)
                if response.status_code == 401:
                    response.headers["WWW-Authenticate"] = 'Basic realm="mlhub", Bearer'
                return response

        return route


def require(value: Any, name: str) -> Any:
    """A required request field, or MLflow's INVALID_PARAMETER_VALUE naming it."""
    if value is None or value == "":
        raise MlflowApiError(f"Missing value for required parameter '{name}'.")
    return value
