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
from mlhub.scheduler.errors import ConfigError, JobAlreadyEnded, JobNotFound
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
)

__all__ = [
    "ENDED_STATES",
    "CancelResult",
    "ConfigError",
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
