"""`MLHubLogger`: the one Lightning logger of mlhub, for user scripts (over an SDK `Run`, HTTP) and for the
worker's jobs (over `mlhub.worker.metrics.JobMetrics`, the event log): both are a `LoggerSink`.

One behaviour for both:
- metrics: Lightning's "epoch" entry sets the epoch of the points (it is not logged as a metric); every other
  key is checked by the one rule set (mlhub.events.keys: numbers only, tensors through `.item()`, NaN and the
  infinities kept, bools and strings refused with InvalidMetric naming the key, after the call's valid keys
  were buffered). A call without a step takes the sink's next step (one more than the highest step it used),
  as `Run.log_metrics` does; Lightning itself always passes its global step.
- hyperparameters: handed to the sink's `log_params` (Lightning's `_convert_params` first, for a Namespace);
  an SDK Run flattens them with dots and writes non-strings as JSON (mlhub.client.values); the worker's sink
  records nothing (the job's params come from its config snapshot).
- log_metrics only buffers (the one PointBatcher's thread sends); finalize flushes and waits (bounded).

Lightning is imported only inside `logger_class()` (made on first use and cached), so importing mlhub.client
costs nothing. Scripts use it as `mlhub.client.MLHubLogger`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from mlhub.errors import ExtraMissing
from mlhub.events.keys import metric_value

if TYPE_CHECKING:
    from mlhub.client.hub import Hub
    from mlhub.client.run import Run


class LoggerSink(Protocol):
    """What MLHubLogger logs to: an SDK `Run`, or the worker's `JobMetrics`."""

    @property
    def run_id(self) -> str:
        """The run logged to."""

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, *,
                    epoch: int | None = None) -> Any:
        """Check and buffer one point per key (step None: the sink's next step); returns at once."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record hyperparameters (or, for a sink that records params elsewhere, nothing)."""

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until everything logged so far is delivered; False when it was not in time."""


@functools.cache
def logger_class() -> type[Any]:
    """The `MLHubLogger` class (a `lightning.pytorch.loggers.Logger` over a LoggerSink), made on first use."""
    try:
        from lightning.fabric.utilities.logger import _convert_params
        from lightning.pytorch.loggers import Logger
        from lightning.pytorch.utilities import rank_zero_only
    except ModuleNotFoundError as e:  # the light install (`pip install mlhub`) has no lightning
        raise ExtraMissing(f"mlhub.client.MLHubLogger needs lightning, which is not installed ({e}): "
                           "pip install 'mlhub[worker]' (or lightning alone)") from e
    from typing_extensions import override

    class MLHubLogger(Logger):
        """Logs Lightning's metrics and hyperparameters to an mlhub run (see the module docstring for the rules).

        Give it a `run` (a LoggerSink: an SDK Run you finish yourself, e.g. with `with hub.start_run(...) as
        run:`, or the worker's JobMetrics), or a `hub` and an `experiment`: it then starts a run on first use
        and finishes it in `finalize` ("success" -> finished, anything else -> failed). `current_epoch` is the
        epoch of the points (Lightning's "epoch" entry; the worker's callback also sets it at each epoch start).
        """

        def __init__(self, run: LoggerSink | None = None, *, hub: Hub | None = None, experiment: str | None = None,
                     run_name: str | None = None, tags: Mapping[str, Any] | None = None,
                     flush_timeout_s: float = 60.0) -> None:
            super().__init__()
            if run is None and (hub is None or not experiment):
                raise ValueError("MLHubLogger needs a run, or a hub and an experiment name")
            self._run = run
            self._owned: Run | None = None  # the run it started (and so finishes)
            self._hub = hub
            self._experiment = experiment
            self._run_name = run_name
            self._tags = dict(tags or {})
            self.flush_timeout_s = flush_timeout_s
            self.current_epoch = 0

        @property
        def run(self) -> LoggerSink:
            """The run logged to (started on first use when the logger was given a hub)."""
            if self._run is None:
                assert self._hub is not None and self._experiment
                self._owned = self._hub.start_run(self._experiment, name=self._run_name, tags=self._tags)
                self._run = self._owned
            return self._run

        @property
        @override
        def name(self) -> str:
            return "mlhub"

        @property
        @override
        def version(self) -> str:
            return self.run.run_id

        @override
        @rank_zero_only
        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            if params is None:
                return
            self.run.log_params(_convert_params(params))

        @override
        @rank_zero_only
        def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
            values = dict(metrics)
            epoch = values.pop("epoch", None)
            if epoch is not None and math.isfinite(number := metric_value(epoch, "epoch")):
                self.current_epoch = max(0, int(number))
            if values:
                self.run.log_metrics(values, None if step is None else int(step), epoch=self.current_epoch)

        @override
        @rank_zero_only
        def finalize(self, status: str) -> None:
            if self._run is None:
                return
            owned = self._owned
            if owned is not None and owned.status is None:
                failed = status != "success"
                owned.finish("failed" if failed else "finished", error_type="LightningStatus" if failed else None,
                             error=status if failed else None, timeout_s=self.flush_timeout_s)
            elif owned is None:
                self._run.flush(self.flush_timeout_s)

    return MLHubLogger
