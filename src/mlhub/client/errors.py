"""Errors of the SDK: the hub could not be reached, or it refused a request (with the API's own code)."""

from __future__ import annotations

from typing import Any

from mlhub.errors import InvalidMetric, MlhubError

__all__ = ["HubRequestError", "HubUnavailable", "InvalidMetric", "RunClosed"]


class HubUnavailable(MlhubError):
    """The hub did not answer (connection refused, timeout) or answered 5xx/401/403/429: worth retrying.

    `status` is the HTTP status when the hub answered, None when it did not."""

    code = "HUB_UNAVAILABLE"

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class HubRequestError(MlhubError):
    """The hub refused a request for good (400, 404, 409, 422): retrying the same request cannot help.

    `status`, `api_code` and `details` come from the API's error body.
    """

    code = "HUB_REQUEST_REFUSED"

    def __init__(self, message: str, *, status: int, api_code: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.api_code = api_code
        self.details = details or {}


class RunClosed(MlhubError):
    """Something was logged to a run after it was finished."""

    code = "RUN_CLOSED"
