"""One training attempt, run in a worker thread: plugin, provenance events, Lightning fit, evaluation,
checkpoint and ONNX artifacts. torch and lightning are imported inside `train_job` only.

Run events are appended through `TrainingContext.publish` (blocking; the worker routes it to its asyncio loop),
metric points through the SDK's one MLHubLogger over a `JobMetrics` (the SDK's PointBatcher with an event-log
sink: mlhub.worker.metrics). Lifecycle events (run.started/finished/failed, job.*)
and the system metrics of the job's process (sampled from the worker: mlhub.worker.jobsystem) are the worker's
business, not this module's.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlhub.artifacts import ArtifactStore
from mlhub.client.lightning_logger import logger_class
from mlhub.events import (
    ArtifactStored,
    CodeVersionRecorded,
    DatasetVersionRecorded,
    DomainEvent,
    EnvironmentRecorded,
    JobQueued,
    ParamsLogged,
)
from mlhub.plugins import load_plugin
from mlhub.worker.metrics import JobMetrics, Send
from mlhub.worker.provenance import code_version, environment_info, flatten_params

#: Trainer settings of the config passed to lightning.Trainer as they are (accelerator is resolved first).
_TRAINER_KEYS = ("max_epochs", "devices", "precision", "deterministic", "limit_train_batches", "limit_val_batches",
                 "gradient_clip_val", "accumulate_grad_batches", "check_val_every_n_epoch", "log_every_n_steps")


@dataclass
class TrainingContext:
    """What one attempt needs from the worker."""

    job: JobQueued
    attempt: int
    pool: str
    producer: str
    publish: Callable[[DomainEvent], None]
    send_metrics: Send
    store: ArtifactStore
    #: Set by the worker to stop the run (cancel, timeout, shutdown): the Trainer stops after the current batch.
    stop: threading.Event = field(default_factory=threading.Event)
    code_dir: Path | None = None
    metric_interval_s: float = 0.5
    #: Metric names the run may log (MLHUB_UNDECLARED_METRICS=reject); None: any key (undeclared ones are flagged).
    declared_metrics: frozenset[str] | None = None
    #: Seconds between system-metric samples of the job's process, taken by the worker (MLHUB_SYSTEM_METRICS_S,
    #: mlhub.worker.jobsystem); 0: none. train_job itself samples nothing.
    system_metrics_s: float = 0.0


@dataclass
class TrainingResult:
    """What an attempt produced: whether it was stopped early, final metrics, artifacts, points logged."""

    stopped: bool
    final_metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[ArtifactStored] = field(default_factory=list)
    points_logged: int = 0
    metrics_delivered: bool = True


def resolve_accelerator(requested: str, pool: str) -> str:
    """`auto` becomes gpu on the gpu pool when CUDA is available, else cpu; explicit choices are kept."""
    if requested != "auto":
        return requested
    import torch

    return "gpu" if pool == "gpu" and torch.cuda.is_available() else "cpu"


def trainer_kwargs(trainer_config: dict[str, Any], pool: str) -> dict[str, Any]:
    """The lightning.Trainer arguments of a config's `trainer` section (None values left to Lightning)."""
    kwargs = {k: trainer_config[k] for k in _TRAINER_KEYS if trainer_config.get(k) is not None}
    kwargs["accelerator"] = resolve_accelerator(str(trainer_config.get("accelerator", "auto")), pool)
    return kwargs


def train_job(ctx: TrainingContext) -> TrainingResult:
    """Run one attempt of `ctx.job` to the end; plugin errors propagate (the worker records them)."""
    import lightning as L
    import torch

    config = ctx.job.config
    run_id = ctx.job.run_id
    plugin = load_plugin(config["plugin"])
    plugin.validate_config(config)
    spec = plugin.build_datamodule(config)
    version = spec.dataset_version
    ctx.publish(DatasetVersionRecorded(run_id=run_id, name=version.name, fingerprint=version.fingerprint,
                                       size_bytes=version.size_bytes, num_examples=version.num_examples))
    code = code_version(ctx.code_dir)
    ctx.publish(CodeVersionRecorded(run_id=run_id, git_commit=code.git_commit, dirty=code.dirty,
                                    diff_sha256=code.diff_sha256, repository=code.repository,
                                    untracked=code.untracked, untracked_count=code.untracked_count))
    kwargs = trainer_kwargs(dict(config.get("trainer", {})), ctx.pool)
    ctx.publish(EnvironmentRecorded(run_id=run_id, **environment_info(kwargs["accelerator"])))
    ctx.publish(ParamsLogged(run_id=run_id, params=flatten_params(config)))

    if kwargs.get("deterministic"):
        if kwargs["accelerator"] == "gpu":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=kwargs["accelerator"] == "gpu")
    L.seed_everything(int(config["seed"]), workers=True, verbose=False)
    module = plugin.build_module(config)

    metrics = JobMetrics(run_id, ctx.send_metrics, producer=ctx.producer, correlation_id=ctx.job.job_id,
                         interval_s=ctx.metric_interval_s, declared=ctx.declared_metrics, attempt=ctx.attempt)
    logger = logger_class()(metrics)
    result = TrainingResult(stopped=False)
    try:
        with tempfile.TemporaryDirectory(prefix="mlhub-run-") as tmp:
            trainer = L.Trainer(**kwargs, logger=logger, enable_progress_bar=False, enable_model_summary=False,
                                enable_checkpointing=False, default_root_dir=tmp,
                                callbacks=[run_control_callback_class()(logger, ctx.stop)])
            trainer.fit(module, spec.datamodule)
            if ctx.stop.is_set():
                result.stopped = True
                return result
            # The final evaluation is one more batch at the last global step and epoch (keys and values checked
            # as every logged point is: InvalidMetric naming a bad one).
            final = metrics.log_metrics(plugin.evaluate(module, spec.datamodule), int(trainer.global_step),
                                        epoch=logger.current_epoch)
            result.final_metrics = {key: value for key, value, *_ in final}
            checkpoint = Path(tmp) / "final.ckpt"
            trainer.save_checkpoint(checkpoint)
            result.artifacts.append(_store(ctx, checkpoint, "checkpoints/final.ckpt", "checkpoint"))
            onnx_path = Path(tmp) / "model.onnx"
            if plugin.export_onnx(module, onnx_path):
                result.artifacts.append(_store(ctx, onnx_path, "model.onnx", "onnx"))
    finally:
        result.metrics_delivered = metrics.close()
        result.points_logged = metrics.points_logged
    return result


@functools.cache
def run_control_callback_class() -> type[Any]:
    """The `RunControl` Lightning callback class: keeps the logger's epoch and stops a run on request."""
    import lightning as L

    class RunControl(L.Callback):
        """Sets `logger.current_epoch` at each epoch start; sets `trainer.should_stop` once `stop` is set."""

        def __init__(self, logger: Any, stop: threading.Event) -> None:
            self.logger = logger
            self.stop = stop

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.logger.current_epoch = int(trainer.current_epoch)
            self._check(trainer)

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            self._check(trainer)

        def _check(self, trainer: Any) -> None:
            if self.stop.is_set():
                trainer.should_stop = True

    return RunControl


def _store(ctx: TrainingContext, path: Path, logical: str, kind: str) -> ArtifactStored:
    stored = ctx.store.put_file(path)
    event = ArtifactStored(run_id=ctx.job.run_id, path=logical, sha256=stored.sha256, size_bytes=stored.size_bytes,
                           uri=stored.uri, kind=kind)  # type: ignore[arg-type]  # kind is one of the literals
    ctx.publish(event)
    return event
