"""Errors of the scheduler, each with a stable code (see `mlhub.errors` for the codes of the rest of mlhub)."""

from __future__ import annotations

from mlhub.errors import ExperimentNameTaken, InvalidInput, MlhubError

__all__ = ["ExperimentNameTaken"]  # re-exported: the error lives in mlhub.errors (the tracking service raises it too)


class ConfigError(InvalidInput):
    """An experiment config that cannot be used: bad YAML, a bad field, an unknown key or a bad override.

    The message names the file and, one problem a line, the field path and what is wrong with it, e.g.
    `configs/x.yaml: trainer.max_epochs: Input should be greater than 0`. Nothing was appended.
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        #: The file the config came from, as the user named it.
        self.source = source
        #: (field path, message) pairs; the path is "" for a problem of the whole file.
        self.problems = problems
        super().__init__("\n".join(f"{source}: {path}: {msg}" if path else f"{source}: {msg}"
                                   for path, msg in problems))


class JobNotFound(MlhubError):
    """No job with that id was ever queued."""

    code = "JOB_NOT_FOUND"


class JobAlreadyEnded(MlhubError):
    """The job has ended (succeeded, failed or cancelled): it can no longer be cancelled."""

    code = "INVALID_STATE"

    def __init__(self, message: str, *, state: str) -> None:
        super().__init__(message)
        #: The state the job ended in.
        self.state = state


class ConfigTooLarge(InvalidInput):
    """An experiment config over the size or nesting limit (MLHUB_API_MAX_CONFIG_BYTES / _DEPTH); nothing
    was appended."""

    code = "REQUEST_TOO_LARGE"

    def __init__(self, message: str, *, limit: str, maximum: int, value: int) -> None:
        super().__init__(message)
        self.details = {"limit": limit, "max": maximum, "value": value}


class RunNotFound(MlhubError):
    """No run with that id was ever created."""

    code = "RUN_NOT_FOUND"


class NotReproducible(MlhubError):
    """The run cannot be resubmitted as it was: no config snapshot, or a snapshot that no longer validates."""

    code = "INVALID_STATE"


class WaitTimeout(MlhubError):
    """A job did not end within the time the caller was willing to wait (the job itself goes on)."""

    code = "TIMEOUT"
