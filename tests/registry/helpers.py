"""Helpers of the registry tests: a run's whole event history appended without training, and projecting."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy.engine import Engine

from mlhub.eventlog import EventLog
from mlhub.events import (
    ArtifactStored,
    CodeVersionRecorded,
    ConfigSnapshotted,
    DatasetVersionRecorded,
    DomainEvent,
    Envelope,
    EnvironmentRecorded,
    MetricsLogged,
    RunCreated,
    RunFailed,
    RunFinished,
    RunStarted,
    SeedRecorded,
    sha256_of,
)
from mlhub.projections import SqlProjector, run_until

CONFIG: dict[str, Any] = {"plugin": "digits-mlp", "model": {"hidden": 32, "lr": 0.01}, "seed": 42}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def sha(text: str) -> str:
    """A sha256 hex digest of text."""
    return hashlib.sha256(text.encode()).hexdigest()


async def append(log: EventLog, *events: DomainEvent) -> int:
    """Append events in order; the sequence of the last."""
    seq = 0
    for event in events:
        seq = (await log.append(Envelope(event=event, producer="tests@host"))).seq
    return seq


async def add_run(
    log: EventLog,
    *,
    config: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    end: str = "finished",
    artifact: str = "model.onnx",
) -> str:
    """Append a run with full provenance, two points per metric (the second, at a later step, is final), an
    artifact and its end ("finished", "failed", or "running": no end). Returns the run id."""
    run_id = uuid.uuid4().hex
    config = CONFIG if config is None else config
    metrics = {"val_acc": 0.95, "val_loss": 0.2} if metrics is None else metrics
    events: list[DomainEvent] = [
        RunCreated(run_id=run_id, experiment_id="exp", name=f"run-{run_id[:6]}", job_id=f"job-{run_id[:8]}"),
        ConfigSnapshotted(run_id=run_id, config=config, sha256=sha256_of(config), overrides=("model.lr=0.01",)),
        SeedRecorded(run_id=run_id, seed=int(config.get("seed", 42))),
        DatasetVersionRecorded(run_id=run_id, name="sklearn-digits", fingerprint=sha("digits"), size_bytes=1234,
                               num_examples=1797),
        CodeVersionRecorded(run_id=run_id, git_commit=COMMIT, dirty=True, diff_sha256=sha("diff"),
                            repository="https://example.invalid/mlhub.git"),
        EnvironmentRecorded(run_id=run_id, python="3.11.9", platform="Linux-x86_64", torch="2.5.1",
                            lightning="2.4.0", cuda=None, device_name="cpu", packages_sha256=sha("packages")),
        RunStarted(run_id=run_id, attempt=1, worker_id="w1"),
    ]
    if metrics:
        points = [(k, v / 2, 0, 0, 1_700_000_000_000) for k, v in metrics.items()]
        points += [(k, v, 10, 1, 1_700_000_000_001) for k, v in metrics.items()]
        events.append(MetricsLogged.from_points(run_id, points))
    events.append(ArtifactStored(run_id=run_id, path=artifact, sha256=sha(run_id), size_bytes=10,
                                 uri=f"file:///artifacts/{sha(run_id)}", kind="onnx"))
    if end == "finished":
        events.append(RunFinished(run_id=run_id, attempt=1))
    elif end == "failed":
        events.append(RunFailed(run_id=run_id, attempt=1, error_type="ValueError", error="diverged"))
    await append(log, *events)
    return run_id


async def project(log: EventLog, engine: Engine) -> None:
    """Apply everything stored so far to the SQL read model."""
    await run_until(log, [SqlProjector(engine)])
