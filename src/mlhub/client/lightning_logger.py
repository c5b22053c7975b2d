"""`MLHubLogger` for any Lightning script: logs through an SDK `Run` (HTTP), not through the event log.

Lightning is imported only inside `sdk_logger_class()` (made on first use and cached), so importing
mlhub.client costs nothing. Use it as `mlhub.client.MLHubLogger`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

from mlhub.client.run import Run
from mlhub.errors import ExtraMissing
from mlhub.events.keys import metric_value


@functools.cache
def sdk_logger_class() -> type[Any]:
    """The `MLHubLogger` class (a `lightning.pytorch.loggers.Logger` over an SDK Run), made on first use."""
    try:
        from lightning.pytorch.loggers import Logger
        from lightning.pytorch.utilities import rank_zero_only
    except ModuleNotFoundError as e:  # the light install (`pip install mlhub`) has no lightning
        raise ExtraMissing(f"mlhub.client.MLHubLogger needs lightning, which is not installed ({e}): "
                           "pip install 'mlhub[worker]' (or lightning alone)") from e
    from typing_extensions import override

    from mlhub.client.hub import Hub

    class MLHubLogger(Logger):
        """Logs Lightning's metrics and hyperparameters to an mlhub run through the SDK.

        Give it a `run` (you finish it, e.g. with `with hub.start_run(...) as run:`), or a `hub` and an
        `experiment`: it then starts a run on first use and finishes it in `finalize` ("success" ->
        finished, anything else -> failed). log_metrics only buffers (the sender thread sends); the epoch of
        a point is Lightning's own "epoch" entry (not logged as a metric); hyperparameters go through
        `Run.log_params` (flattened with dots, non-strings as JSON; the same value logged again, as `fit` then
        `test` do, is a no-op). Keys and values are checked by the SDK's one rule set (mlhub.events.keys):
        a bad one raises InvalidMetric after the step's valid keys were logged. finalize flushes and waits
        (bounded) for the hub.
        """

        def __init__(self, run: Run | None = None, *, hub: Hub | None = None, experiment: str | None = None,
                     run_name: str | None = None, tags: Mapping[str, Any] | None = None,
                     flush_timeout_s: float = 60.0) -> None:
            super().__init__()
            if run is None and (hub is None or not experiment):
                raise ValueError("MLHubLogger needs a run, or a hub and an experiment name")
            self._run = run
            self._owns_run = run is None
            self._hub = hub
            self._experiment = experiment
            self._run_name = run_name
            self._tags = dict(tags or {})
            self.flush_timeout_s = flush_timeout_s
            self.current_epoch = 0

        @property
        def run(self) -> Run:
            """The run logged to (started on first use when the logger was given a hub)."""
            if self._run is None:
                assert self._hub is not None and self._experiment
                self._run = self._hub.start_run(self._experiment, name=self._run_name, tags=self._tags)
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
            self.run.log_params(params if isinstance(params, Mapping) else vars(params))

        @override
        @rank_zero_only
        def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
            values = dict(metrics)
            epoch = values.pop("epoch", None)
            if epoch is not None and math.isfinite(number := metric_value(epoch, "epoch")):
                self.current_epoch = int(number)
            if values:
                self.run.log_metrics(values, step=max(0, int(step or 0)), epoch=max(0, self.current_epoch))

        @override
        @rank_zero_only
        def finalize(self, status: str) -> None:
            if self._run is None:
                return
            if self._owns_run and self._run.status is None:
                self._run.finish("finished" if status == "success" else "failed",
                                 error_type=None if status == "success" else "LightningStatus",
                                 error=None if status == "success" else status, timeout_s=self.flush_timeout_s)
            elif self._run.status is None:
                self._run.flush(self.flush_timeout_s)

    return MLHubLogger
