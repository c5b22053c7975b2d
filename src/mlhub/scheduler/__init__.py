"""Job submission: config validation, snapshot, seed -> job.queued; cancel.

Configs are YAML files under `configs/` (see `config.py` and docs/scheduler.md); `submit` and `cancel` are in
`service.py`. The scheduler knows a plugin name and a config, nothing about models. Dataset versions and
timeouts come with the workers.
"""

from mlhub.scheduler.config import (
    DataConfig,
    ExperimentConfig,
    LoadedConfig,
    Override,
    TrainerConfig,
    apply_overrides,
    load_config,
    parse_override,
    validate_config,
)
from mlhub.scheduler.errors import (
    ConfigError,
    ExperimentNameTaken,
    JobAlreadyEnded,
    JobNotFound,
    NotReproducible,
    RunNotFound,
    WaitTimeout,
)
from mlhub.scheduler.follow import JobOutcome, wait_for_job
from mlhub.scheduler.reproduce import Comparison, MetricMatch, RunRecord, compare, fold_run, read_run, reproduce
from mlhub.scheduler.service import (
    ENDED_STATES,
    CancelResult,
    JobStatus,
    SubmitResult,
    cancel,
    experiment_id_for,
    job_status,
    resolve_snapshot,
    submit,
    submit_snapshot,
)

__all__ = [
    "Comparison",
    "JobOutcome",
    "MetricMatch",
    "NotReproducible",
    "RunNotFound",
    "RunRecord",
    "WaitTimeout",
    "compare",
    "fold_run",
    "read_run",
    "reproduce",
    "submit_snapshot",
    "wait_for_job",
    "ENDED_STATES",
    "CancelResult",
    "ConfigError",
    "ExperimentNameTaken",
    "DataConfig",
    "ExperimentConfig",
    "JobAlreadyEnded",
    "JobNotFound",
    "JobStatus",
    "LoadedConfig",
    "Override",
    "SubmitResult",
    "TrainerConfig",
    "apply_overrides",
    "cancel",
    "experiment_id_for",
    "job_status",
    "load_config",
    "parse_override",
    "resolve_snapshot",
    "submit",
    "validate_config",
]
