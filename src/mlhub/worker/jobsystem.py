"""System metrics of a job, sampled from the worker's process: the job's process runs no sampler.

`JobSystemMetrics(ctx, pid)` starts, in the worker, a `SystemSampler` (mlhub.client.system) on the job's process
`pid` and its descendants (data loader workers, anything the plugin started), GPU figures through NVML's
per-process lists of those pids, and a `JobMetrics` of the worker's own (the SDK's PointBatcher over an
event-log sink) that appends the points to the run through the same `send_metrics` the job's own metric batches
go through (the worker's event log, `append_many`).

Why here and not in the job's process: MLHUB_JOB_MEMORY_MB is an RLIMIT_AS budget of the job's process (its
address space above the framework's mappings, mlhub.worker.jobprocess). A sampler thread there would spend that
budget: its stack (8 MiB) and the malloc arena glibc gives a new thread (64 MiB reserved), plus psutil and NVML
mapped after the limit, which was enough to make a tiny job's ONNX export fail to create its threads under a
512 MiB budget. Sampled from outside, the job's budget is the job's alone, whatever the interval; the sampler
still sees the job's descendants (psutil lists them from any process of the same user), and the job's process
spends no GIL time on it.

Events: the points are ordinary `run.metrics_logged` events of the job's run and attempt, unguarded like the
job's own metric batches (a metric batch decides nothing of the run's state: the job's guarded events are on
the job's subjects, and a metric event moves no lifecycle subject of the run). `close()` is called when the
job's process has ended, before the worker records the outcome, so no system point comes after the run's end.
"""

from __future__ import annotations

import logging

from mlhub.client.system import SystemSample, SystemSampler
from mlhub.worker.metrics import JobMetrics
from mlhub.worker.training import TrainingContext

log = logging.getLogger(__name__)

#: How long close() waits for the sampler's thread to end (a sample is milliseconds of psutil and NVML calls).
STOP_WAIT_S = 5.0
#: How long close() waits for the system points to be appended (the job's own sender waits as long).
FLUSH_WAIT_S = 60.0


class JobSystemMetrics:
    """The system metrics of one job attempt, sampled every `ctx.system_metrics_s` from this (the worker's)
    process; nothing at all when it is 0."""

    def __init__(self, ctx: TrainingContext, pid: int) -> None:
        self.sender: JobMetrics | None = None
        self.sampler: SystemSampler | None = None
        if ctx.system_metrics_s <= 0:
            return
        self.sender = JobMetrics(ctx.job.run_id, ctx.send_metrics, producer=ctx.producer,
                                 correlation_id=ctx.job.job_id, interval_s=ctx.metric_interval_s,
                                 declared=ctx.declared_metrics, attempt=ctx.attempt)
        self.sampler = SystemSampler(self._add, ctx.system_metrics_s, name=ctx.job.run_id, pid=pid).start()

    def _add(self, sample: SystemSample) -> None:
        assert self.sender is not None
        self.sender.add([(key, value, sample.step, 0, sample.timestamp_ms) for key, value in sample.values.items()])

    def close(self) -> tuple[int, bool]:
        """Stop sampling and append what was sampled: (points given to the run, whether all were appended)."""
        if self.sampler is None or self.sender is None:
            return 0, True
        self.sampler.stop(STOP_WAIT_S)
        delivered = self.sender.close(FLUSH_WAIT_S)
        if not delivered:
            log.warning("run %s: %d system metric points could not be appended", self.sender.run_id,
                        self.sender.dropped)
        return self.sampler.points, delivered
