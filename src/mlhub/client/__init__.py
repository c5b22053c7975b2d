"""The Python SDK and the Lightning logger for user scripts.

    from mlhub.client import Hub

    hub = Hub("http://127.0.0.1:8000", token="...")
    with hub.start_run("my-experiment", params={"lr": 0.01}) as run:
        for step in range(1000):
            run.log_metrics({"loss": loss}, step=step)   # only buffers; a background thread sends
        run.log_artifact("model.onnx")

The SDK talks HTTP only (httpx): it imports no event log, read model or worker code, and no torch or
lightning until `MLHubLogger` is first used (`mlhub.client.MLHubLogger` is made on first access). The worker
uses the same logger and batcher (lightning_logger.py, batcher.py) with an event-log sink of its own.
"""

from __future__ import annotations

from typing import Any

from mlhub.client.delivery import Rejection, ResendReport
from mlhub.client.errors import HubAuthError, HubRequestError, HubUnavailable, InvalidMetric, RecordRejected, RunClosed
from mlhub.client.hub import Hub
from mlhub.client.run import ArtifactInfo, Run

__all__ = [
    "ArtifactInfo",
    "Hub",
    "HubAuthError",
    "HubRequestError",
    "HubUnavailable",
    "InvalidMetric",
    "MLHubLogger",
    "RecordRejected",
    "Rejection",
    "ResendReport",
    "Run",
    "RunClosed",
]


def __getattr__(name: str) -> Any:
    """`MLHubLogger` is made on first access (it subclasses Lightning's Logger); any other name is an error."""
    if name == "MLHubLogger":
        from mlhub.client.lightning_logger import logger_class

        return logger_class()
    raise AttributeError(f"module 'mlhub.client' has no attribute {name!r}")
