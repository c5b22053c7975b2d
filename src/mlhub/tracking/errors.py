"""Errors of the tracking service, each with the code the API maps to a status (mlhub.api.errors)."""

from __future__ import annotations

from typing import Any

from mlhub.errors import InvalidInput, MlhubError


class TrackingError(MlhubError):
    """Base of the tracking service's errors; `details` goes into the API's error body."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class RunNotFound(TrackingError):
    """No run of that id was ever created (404)."""

    code = "RESOURCE_DOES_NOT_EXIST"


class RunEnded(TrackingError):
    """The run has ended (finished, failed, killed or crashed): nothing more can be logged to it (409)."""

    code = "INVALID_STATE"

    def __init__(self, message: str, *, state: str, seq: int | None = None) -> None:
        super().__init__(message, details={"state": state, **({"seq": seq} if seq is not None else {})})
        self.state = state


class InvalidRunState(TrackingError):
    """The run is not in a state that allows this (resume a run that did not crash, end a job's run) (409)."""

    code = "INVALID_STATE"


class IdempotencyKeyReused(TrackingError):
    """A request id, batch id or upload id came again with another body: nothing is appended (409)."""

    code = "IDEMPOTENCY_KEY_REUSED"


class ParamValueChanged(TrackingError):
    """A param was logged again with another value; a param keeps its first value (409, as in MLflow)."""

    code = "PARAM_VALUE_CHANGED"


class BadTrackingRequest(InvalidInput):
    """A request that names nothing to do or a bad field outside keys and values (400)."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class InvalidTrackingInput(InvalidInput):
    """A key or value that cannot be logged; `details.keys` names the keys (422, code INVALID_METRIC)."""

    code = "INVALID_METRIC"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class UndeclaredMetricRefused(InvalidTrackingInput):
    """Metric keys that configs/metrics.yaml does not declare while MLHUB_UNDECLARED_METRICS=reject (422)."""

    code = "UNDECLARED_METRIC"


class LimitExceeded(InvalidTrackingInput):
    """A request over one of the documented limits; `details.limit` names the setting (422, or 413 for size)."""

    code = "LIMIT_EXCEEDED"


class RequestTooLarge(LimitExceeded):
    """A request body or event over a size limit (413)."""

    code = "REQUEST_TOO_LARGE"
