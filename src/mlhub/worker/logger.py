"""MLHubLogger: a Lightning logger that sends metrics to the event log in batches, in the background.

Lightning is imported only inside `mlhub_logger_class()` and `run_control_callback_class()` (made on first
use and cached), so importing this module costs nothing. Keys and values pass the one validation of
`mlhub.events.keys` (any Unicode key such as `train/loss` or `val/acc@top1`; numbers only, tensors through
`.item()`, never bools or strings): a bad one raises InvalidMetric (INVALID_METRIC) naming it, which fails the
run. Non-finite values are kept (stored as "NaN"/"Infinity").
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from mlhub.events import MetricPoint, check_key, check_step, check_timestamp, metric_value
from mlhub.worker.metrics import MetricSender


def to_float(value: Any, key: str = "") -> float:
    """A metric value as a Python float (a 0-d tensor or numpy scalar via .item()); InvalidMetric for a bool,
    a string or anything else that is not one number (mlhub.events.metric_value)."""
    return metric_value(value, key)


def metric_points(metrics: Mapping[str, Any], step: int, epoch: int, timestamp_ms: int | None = None
                  ) -> list[MetricPoint]:
    """Points of one `log_metrics` call: one per key, all at `step` and `epoch`; InvalidMetric names a bad key,
    value, step or epoch (nothing is returned then)."""
    ts = check_timestamp(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms)
    at, in_epoch = check_step(step), check_step(epoch, "epoch")
    return [MetricPoint(check_key(key), to_float(value, key), at, in_epoch, ts) for key, value in metrics.items()]


@functools.cache
def mlhub_logger_class() -> type[Any]:
    """The `MLHubLogger` class (a `lightning.pytorch.loggers.Logger`), made on first use."""
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.utilities import rank_zero_only
    from typing_extensions import override

    class MLHubLogger(Logger):
        """Sends every logged metric point to the run's event log through a background `MetricSender`.

        log_metrics only buffers (the training loop never waits on the network); finalize(status) flushes
        and waits for the acknowledgements. `epoch` comes from Lightning's own "epoch" entry when present,
        else from `current_epoch` (kept up to date by the worker's callback). log_hyperparams hands flat
        string params to `on_params` when given (the worker records params itself, so it passes none).
        """

        def __init__(self, sender: MetricSender, *, on_params: Callable[[dict[str, str]], None] | None = None,
                     flush_timeout_s: float = 60.0) -> None:
            super().__init__()
            self.sender = sender
            self.on_params = on_params
            self.flush_timeout_s = flush_timeout_s
            self.current_epoch = 0
            self.last_step = 0
            self.points_logged = 0
            self._lock = threading.Lock()

        @property
        @override
        def name(self) -> str:
            return "mlhub"

        @property
        @override
        def version(self) -> str:
            return self.sender.run_id

        @override
        @rank_zero_only
        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            if self.on_params is None or params is None:
                return
            items = params.items() if isinstance(params, Mapping) else vars(params).items()
            self.on_params({str(k): str(v) for k, v in items})

        @override
        @rank_zero_only
        def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
            values = dict(metrics)
            epoch = values.pop("epoch", None)
            with self._lock:
                if epoch is not None and math.isfinite(number := to_float(epoch, "epoch")):
                    self.current_epoch = int(number)
                if step is not None:
                    self.last_step = int(step)
                points = metric_points(values, self.last_step, self.current_epoch)
                self.points_logged += len(points)
            self.sender.add(points)

        @override
        @rank_zero_only
        def finalize(self, status: str) -> None:
            self.sender.flush(self.flush_timeout_s)

    return MLHubLogger


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
