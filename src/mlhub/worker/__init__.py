"""Job consumption, plugin loading, Lightning runs, metric and artifact publication (torch imported lazily).

`Worker` (service.py) consumes a pool's queued jobs; `train_job` (training.py) runs one attempt, in a process of
its own (jobprocess.py: memory limit, hard kill);
metric points go through the SDK's one Lightning logger and batcher (mlhub.client) over `JobMetrics`
(metrics.py), an event-log sink.
See docs/worker.md.
"""

from mlhub.worker.metrics import EventLogSink, JobMetrics, UndeclaredMetric
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
from mlhub.worker.training import (
    TrainingContext,
    TrainingResult,
    run_control_callback_class,
    train_job,
    trainer_kwargs,
)

__all__ = [
    "QUEUED_SUBJECTS",
    "CodeVersion",
    "JobView",
    "EventLogSink",
    "JobMetrics",
    "TrainingContext",
    "TrainingResult",
    "UndeclaredMetric",
    "Worker",
    "WorkerConfig",
    "artifacts_root",
    "code_version",
    "consumer_name",
    "default_worker_id",
    "environment_info",
    "flatten_params",
    "job_view",
    "run_control_callback_class",
    "train_job",
    "trainer_kwargs",
]
