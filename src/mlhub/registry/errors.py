"""Errors of the model registry, each with a stable code (see `mlhub.errors` for the rest of mlhub)."""

from __future__ import annotations

from mlhub.errors import ConcurrencyError, InvalidInput, MlhubError


class ModelNotFound(MlhubError):
    """No version of that model was ever registered."""

    code = "MODEL_NOT_FOUND"


class ModelExists(MlhubError):
    """A registered model of that name exists already (MLflow's create_registered_model)."""

    code = "RESOURCE_ALREADY_EXISTS"


class ModelVersionNotFound(MlhubError):
    """The model exists but has no such version."""

    code = "MODEL_VERSION_NOT_FOUND"


class AliasNotFound(MlhubError):
    """The model has no such alias (never set, or removed)."""

    code = "ALIAS_NOT_FOUND"


class RunNotRegistrable(MlhubError):
    """A model version cannot come from this run: it does not exist, has not finished, or lacks the artifact."""

    code = "RUN_NOT_REGISTRABLE"


class PromotionConflict(ConcurrencyError):
    """The alias does not point where the promoter expected: someone else moved it first. Nothing was appended.

    `expected` and `actual` are the alias's versions (None: the alias is not set), not aggregate versions.
    """

    code = "PROMOTION_CONFLICT"

    def __init__(self, model_name: str, alias: str, *, expected: int | None, actual: int | None) -> None:
        super().__init__(
            f"model {model_name}: alias {alias!r} points to {_version(actual)}, not the expected "
            f"{_version(expected)}: another promotion came first; read the alias again and decide anew",
            expected=expected, actual=actual,
        )
        self.model_name = model_name
        self.alias = alias


class GateFailed(MlhubError):
    """A promotion gate of the alias is not met by the version; nothing was appended.

    `failures` holds one line per failing condition, naming the condition and the actual value.
    """

    code = "PROMOTION_GATE_FAILED"

    def __init__(self, model_name: str, alias: str, version: int, failures: list[str]) -> None:
        super().__init__(
            f"model {model_name} version {version} cannot become {alias!r}: "
            + "; ".join(failures)
        )
        self.failures = failures


class GatesConfigError(InvalidInput):
    """The promotion gates file is unreadable or invalid; the message names the file and each field path."""


def _version(version: int | None) -> str:
    return "no version (unset)" if version is None else f"version {version}"
