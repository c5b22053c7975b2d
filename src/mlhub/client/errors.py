"""Errors of the SDK: the hub could not be reached, refused the token, or refused a request (with its own code)."""

from __future__ import annotations

from typing import Any

from mlhub.errors import InvalidMetric, MlhubError

__all__ = ["HubAuthError", "HubRequestError", "HubUnavailable", "InvalidMetric", "RecordRejected", "RunClosed"]


class HubUnavailable(MlhubError):
    """The hub did not answer (connection refused, timeout) or answered 5xx/408/429: worth retrying.

    `status` is the HTTP status when the hub answered, None when it did not; `api_code` the code of its answer
    (e.g. EVENT_LOG_UNAVAILABLE), None when it did not answer."""

    code = "HUB_UNAVAILABLE"

    def __init__(self, message: str, *, status: int | None = None, api_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.api_code = api_code


class HubAuthError(MlhubError):
    """The hub refused the token (401: unknown token, 403: a role that may not do this, e.g. a reader's).

    Not an outage and not a refusal of the data: a run's records stay in the spool and a Hub with a good
    token resends them. `status` and `api_code` come from the API's answer."""

    code = "HUB_AUTH_REFUSED"

    def __init__(self, message: str, *, status: int, api_code: str) -> None:
        super().__init__(message)
        self.status = status
        self.api_code = api_code


class HubRequestError(MlhubError):
    """The hub refused a request for good (400, 404, 409, 413, 422): retrying the same request cannot help.

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


class RecordRejected(UserWarning):
    """Warned when the hub refused logged data for good (the run, the keys and the hub's message are named;
    the data is kept in the run's `<run_id>.rejected.jsonl` in the spool folder)."""
