"""Model registry: register versions from run artifacts, promote aliases with optimistic concurrency and
gates, and read models, alias history and lineage from the read model.

Commands (`service.py`) append to the event log and check everything against it; queries (`queries.py`) read
the SQL read model. Imports events, eventlog and readmodel of mlhub.
"""

from mlhub.registry.errors import (
    AliasNotFound,
    GateFailed,
    GatesConfigError,
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
from mlhub.registry.runs import RunFacts, read_run, runs_with_config
from mlhub.registry.service import (
    ModelState,
    PromoteResult,
    RegisterResult,
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
    "ModelNotFound",
    "ModelState",
    "ModelVersionNotFound",
    "PromoteResult",
    "PromotionConflict",
    "RegisterResult",
    "ReproducedCondition",
    "RunFacts",
    "RunNotRegistrable",
    "current_alias",
    "evaluate",
    "load_gates",
    "model_state",
    "parse_gates",
    "promote",
    "read_run",
    "register",
    "runs_with_config",
]
