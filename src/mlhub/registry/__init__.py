"""Model registry: register versions from run artifacts, promote aliases with optimistic concurrency and
gates, and read models, alias history and lineage from the read model.

Commands (`service.py`) append to the event log and check everything against it; queries (`queries.py`) read
the SQL read model. Imports events, eventlog and readmodel of mlhub.
"""

from mlhub.registry.errors import (
    AliasNotFound,
    GateFailed,
    GatesConfigError,
    ModelExists,
    ModelNotFound,
    ModelVersionNotFound,
    PromotionConflict,
    RunNotRegistrable,
)
from mlhub.registry.gates import (
    GateResult,
    GatesConfig,
    MetricCondition,
    ReproducedCondition,
    evaluate,
    load_gates,
    parse_gates,
)
from mlhub.registry.models import create_model, delete_model, delete_version, remove_alias, update_model
from mlhub.registry.runs import RunFacts, read_run, runs_with_config
from mlhub.registry.service import (
    ModelState,
    PromoteResult,
    RegisterResult,
    artifact_digest,
    current_alias,
    model_state,
    promote,
    register,
)

__all__ = [
    "AliasNotFound",
    "GateFailed",
    "GateResult",
    "GatesConfig",
    "GatesConfigError",
    "MetricCondition",
    "ModelExists",
    "ModelNotFound",
    "ModelState",
    "ModelVersionNotFound",
    "PromoteResult",
    "PromotionConflict",
    "RegisterResult",
    "ReproducedCondition",
    "RunFacts",
    "RunNotRegistrable",
    "artifact_digest",
    "create_model",
    "current_alias",
    "delete_model",
    "delete_version",
    "evaluate",
    "load_gates",
    "model_state",
    "parse_gates",
    "promote",
    "read_run",
    "register",
    "remove_alias",
    "runs_with_config",
    "update_model",
]
