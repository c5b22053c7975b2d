"""The write side of run tracking for every producer (REST, the MLflow-compatible API, SDK resends, the reaper,
`mlhub runs end`): create (idempotent), params, tags, metric batches, artifact records, finish, heartbeat,
crash, resume, one key/value validation (mlhub.events.keys) and the documented limits.

Imports events, eventlog, readmodel (the reaper's candidates) and settings of mlhub; the API's routers are thin
adapters over `TrackingService`.
"""

from mlhub.tracking.declared import DeclaredMetrics
from mlhub.tracking.edits import (
    ExperimentDeletedError,
    ExperimentExists,
    ExperimentNotFound,
    ExperimentState,
    ImportConflict,
    experiment_state,
)
from mlhub.tracking.errors import (
    IdempotencyKeyReused,
    InvalidRunState,
    InvalidTrackingInput,
    LimitExceeded,
    ParamValueChanged,
    RequestTooLarge,
    RunEnded,
    RunNotFound,
    TrackingError,
    UndeclaredMetricRefused,
)
from mlhub.tracking.limits import TrackingLimits
from mlhub.tracking.reaper import Crashed, Reaper, running_runs
from mlhub.tracking.service import TrackingService, Written, metric_events
from mlhub.tracking.state import RunState, RunStates, load_run_state
from mlhub.tracking.validation import SeriesInput, check_request

__all__ = [
    "Crashed",
    "DeclaredMetrics",
    "ExperimentDeletedError",
    "ExperimentExists",
    "ExperimentNotFound",
    "ExperimentState",
    "ImportConflict",
    "experiment_state",
    "IdempotencyKeyReused",
    "InvalidRunState",
    "InvalidTrackingInput",
    "LimitExceeded",
    "ParamValueChanged",
    "Reaper",
    "RequestTooLarge",
    "RunEnded",
    "RunNotFound",
    "RunState",
    "RunStates",
    "SeriesInput",
    "TrackingError",
    "TrackingLimits",
    "TrackingService",
    "UndeclaredMetricRefused",
    "Written",
    "check_request",
    "load_run_state",
    "metric_events",
    "running_runs",
]
