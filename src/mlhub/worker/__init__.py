"""Job consumption, plugin loading, Lightning runs, metric and artifact publication (torch imported lazily).

`Worker` (service.py) consumes a pool's queued jobs; `train_job` (training.py) runs one attempt, in a process of
its own (jobprocess.py: memory limit, hard kill);
`MetricSender` (metrics.py) and `mlhub_logger_class()` (logger.py) send metrics in the background.
See docs/worker.md.
"""

from mlhub.worker.logger import metric_points, mlhub_logger_class, run_control_callback_class, to_float
from mlhub.worker.metrics import MAX_POINTS_PER_EVENT, MetricSender
from mlhub.worker.provenance import CodeVersion, code_version, environment_info, flatten_params
from mlhub.worker.service import (
    QUEUED_SUBJECTS,
    Worker,
    WorkerConfig,
    artifacts_root,
    consumer_name,
    default_worker_id,
)
from mlhub.worker.state import JobView, job_view
from mlhub.worker.training import TrainingContext, TrainingResult, train_job, trainer_kwargs

__all__ = [
    "MAX_POINTS_PER_EVENT",
    "QUEUED_SUBJECTS",
    "CodeVersion",
    "JobView",
    "MetricSender",
    "TrainingContext",
    "TrainingResult",
    "Worker",
    "WorkerConfig",
    "artifacts_root",
    "code_version",
    "consumer_name",
    "default_worker_id",
    "environment_info",
    "flatten_params",
    "job_view",
    "metric_points",
    "mlhub_logger_class",
    "run_control_callback_class",
    "to_float",
    "train_job",
    "trainer_kwargs",
]
