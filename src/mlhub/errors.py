"""Errors of mlhub's own, each with a stable code.

This module imports nothing of mlhub, so every package may use it. The code of each error is what the API
maps to an HTTP status (in one place, later) and what the CLI prints; the message names what is wrong.
"""

from __future__ import annotations

from typing import ClassVar


class MlhubError(Exception):
    """Base class of every error mlhub raises on purpose."""

    code: ClassVar[str] = "INTERNAL_ERROR"


class InvalidInput(MlhubError):
    """Input that names a wrong field or value; nothing was stored."""

    code = "INVALID_PARAMETER_VALUE"


class InvalidMetric(InvalidInput):
    """A metric, param or tag key or a metric value that cannot be logged (mlhub.events.keys names the rules)."""

    code = "INVALID_METRIC"


class ExperimentNameTaken(InvalidInput):
    """The experiment id a name maps to already belongs to an experiment of another name."""

    code = "CONCURRENCY_CONFLICT"


class EventDecodeError(MlhubError):
    """A stored message is not a readable mlhub event (unknown type, newer schema, corrupt payload)."""

    code = "EVENT_DECODE_ERROR"


class ConcurrencyError(MlhubError):
    """An append expected an aggregate version that is no longer the current one."""

    code = "CONCURRENCY_CONFLICT"

    def __init__(self, message: str, *, expected: int | None = None, actual: int | None = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class EventLogUnavailable(MlhubError):
    """The event log (NATS JetStream) could not be reached or did not acknowledge in time."""

    code = "EVENT_LOG_UNAVAILABLE"


class EventLogUnauthorized(EventLogUnavailable):
    """The NATS server refused the connection's credentials (none given, or wrong ones): retrying cannot help."""

    code = "EVENT_LOG_UNAUTHORIZED"


class StreamConfigConflict(MlhubError):
    """The existing stream's settings differ from what mlhub requires."""

    code = "STREAM_CONFIG_CONFLICT"


class AppendRejected(MlhubError):
    """The server refused an append for a reason a retry cannot fix (too large, denied, ...)."""

    code = "APPEND_REJECTED"


class EventTooLarge(AppendRejected):
    """An event over the largest message the event log takes: nothing was stored (the request must be split)."""

    code = "REQUEST_TOO_LARGE"


class EventLogPermissionDenied(AppendRejected):
    """The NATS server denied this connection's user a subject (publish or subscribe): nothing was stored."""

    code = "EVENT_LOG_PERMISSION_DENIED"


class EmbeddedServerError(MlhubError):
    """The embedded nats-server could not be started or stopped."""

    code = "EMBEDDED_SERVER_ERROR"


class InvalidBackup(InvalidInput):
    """A backup of the event log that cannot be restored as it is: not mlhub's, incomplete, or altered."""

    code = "INVALID_BACKUP"


class RestoreRefused(MlhubError):
    """A restore that would overwrite or conflict with what the server holds: nothing was changed."""

    code = "RESTORE_REFUSED"


class BackupFailed(MlhubError):
    """The server could not take or restore a snapshot of the stream; nothing was left behind."""

    code = "BACKUP_FAILED"


class ExtraMissing(MlhubError, ImportError):
    """A command or class needs an optional extra of the mlhub distribution (`mlhub[worker]`) that is not
    installed. An ImportError too, so `try: from mlhub.client import MLHubLogger except ImportError` works."""

    code = "EXTRA_MISSING"
