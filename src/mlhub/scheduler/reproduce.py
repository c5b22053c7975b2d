"""Reproducing a run: resubmit its recorded snapshot, then compare the two runs metric by metric.

Everything is read from the event log (the run's own events), so a reproduction needs no projector and is
judged on exactly what was recorded. "Final metrics" are `mlhub.events.final_metrics`: each key's point with
the highest (step, timestamp) of the attempt that ended the run (the worker logs the held-out evaluation last,
at the final step). Two values match only when they are bit-identical (NaN matches NaN); there is no
tolerance: CPU training with a fixed seed, deterministic algorithms and the same data is expected to give
the same floats.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mlhub.eventlog import EventLog, Recorded
from mlhub.events import (
    SYSTEM_METRIC_PREFIX,
    CodeVersionRecorded,
    ConfigSnapshotted,
    DatasetVersionRecorded,
    EnvironmentRecorded,
    RunCreated,
    RunStatus,
    final_metrics,
    run_lifecycle,
)
from mlhub.scheduler.errors import NotReproducible, RunNotFound
from mlhub.scheduler.service import SubmitResult, submit_snapshot


@dataclass(frozen=True)
class RunRecord:
    """What the log says about one run, as far as reproduction is concerned."""

    run_id: str
    experiment_id: str
    #: mlhub.events.RunLifecycle's status (queued until the run started).
    status: RunStatus
    snapshot: dict[str, Any] | None
    config_sha256: str | None
    overrides: tuple[str, ...]
    seed: int | None
    dataset_fingerprint: str | None
    git_commit: str | None
    dirty: bool | None
    torch_version: str | None
    reproduces_run_id: str | None
    #: The final value of each key (mlhub.events.final_metrics: the last attempt's, by step then timestamp).
    final_metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricMatch:
    """One key's final value in both runs; None where a run has no such key."""

    key: str
    original: float | None
    reproduced: float | None

    @property
    def matches(self) -> bool:
        """Bit-identical values (NaN equals NaN); a key missing on either side never matches."""
        if self.original is None or self.reproduced is None:
            return False
        return _bits(self.original) == _bits(self.reproduced) or (
            math.isnan(self.original) and math.isnan(self.reproduced))


@dataclass(frozen=True)
class Comparison:
    """The metric-by-metric verdict of a reproduction, and the provenance that should be equal."""

    original: RunRecord
    reproduced: RunRecord
    metrics: tuple[MetricMatch, ...]

    @property
    def same_config(self) -> bool:
        """Whether both runs recorded a config snapshot, with the same hash."""
        return self.original.config_sha256 is not None and self.original.config_sha256 == self.reproduced.config_sha256

    @property
    def same_data(self) -> bool:
        """Whether both runs saw data with the same fingerprint."""
        return self.original.dataset_fingerprint == self.reproduced.dataset_fingerprint

    @property
    def all_match(self) -> bool:
        """The reproduction succeeded: both runs finished, same config and data, every final metric identical."""
        return (self.original.status == RunStatus.FINISHED and self.reproduced.status == RunStatus.FINISHED
                and self.same_config
                and self.same_data and bool(self.metrics) and all(m.matches for m in self.metrics))

    def problems(self) -> list[str]:
        """Why all_match is false, one line each (empty when it is true)."""
        out: list[str] = []
        for record, name in ((self.original, "original"), (self.reproduced, "reproduced")):
            if record.status != RunStatus.FINISHED:
                out.append(f"the {name} run {record.run_id} is {record.status}, not finished")
        if not self.same_config:
            out.append(f"config sha256 differs: {self.original.config_sha256} vs {self.reproduced.config_sha256}")
        if not self.same_data:
            out.append(f"dataset fingerprint differs: {self.original.dataset_fingerprint} vs "
                       f"{self.reproduced.dataset_fingerprint}")
        if not self.metrics:
            out.append("neither run logged any metric")
        out.extend(f"{m.key}: {m.original!r} vs {m.reproduced!r}" for m in self.metrics if not m.matches)
        return out


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


async def read_run(event_log: EventLog, run_id: str) -> RunRecord:
    """Fold a run's events into a RunRecord; RunNotFound when the run was never created."""
    aggregate = await event_log.read_aggregate("run", run_id)
    if not aggregate.events:
        raise RunNotFound(f"no run {run_id} was ever created")
    return fold_run(run_id, aggregate.events)


def fold_run(run_id: str, events: Sequence[Recorded]) -> RunRecord:
    """A RunRecord from the run's events, oldest first (pure)."""
    created: RunCreated | None = None
    snapshot: ConfigSnapshotted | None = None
    dataset = code = env = None
    domain_events = [recorded.envelope.event for recorded in events]
    for event in domain_events:
        if isinstance(event, RunCreated):
            created = event
        elif isinstance(event, ConfigSnapshotted):
            snapshot = event
        elif isinstance(event, DatasetVersionRecorded):
            dataset = event
        elif isinstance(event, CodeVersionRecorded):
            code = event
        elif isinstance(event, EnvironmentRecorded):
            env = event
    return RunRecord(
        run_id=run_id,
        experiment_id=created.experiment_id if created else "",
        status=run_lifecycle(domain_events).status or RunStatus.QUEUED,
        snapshot=dict(snapshot.config) if snapshot else None,
        config_sha256=snapshot.sha256 if snapshot else None,
        overrides=tuple(snapshot.overrides) if snapshot else (),
        seed=int(snapshot.config["seed"]) if snapshot and snapshot.config.get("seed") is not None else None,
        dataset_fingerprint=dataset.fingerprint if dataset else None,
        git_commit=code.git_commit if code else None,
        dirty=code.dirty if code else None,
        torch_version=env.torch if env else None,
        reproduces_run_id=created.reproduces_run_id if created else None,
        final_metrics=final_metrics(domain_events),
    )


async def reproduce(event_log: EventLog, run_id: str, *, producer: str) -> tuple[RunRecord, SubmitResult]:
    """Resubmit the run's recorded snapshot unchanged (same seed, same sha256) as a new run that records
    which run it reproduces. RunNotFound / NotReproducible (no snapshot, e.g. an SDK run) otherwise."""
    original = await read_run(event_log, run_id)
    if original.snapshot is None:
        raise NotReproducible(f"run {run_id} has no config snapshot (it was not submitted as a job): "
                              "nothing to resubmit")
    # The snapshot's sha256 was checked when its event was decoded (ConfigSnapshotted validates it).
    result = await submit_snapshot(event_log, original.snapshot, overrides=original.overrides, producer=producer,
                                   reproduces_run_id=run_id)
    return original, result


def compare(original: RunRecord, reproduced: RunRecord) -> Comparison:
    """Compare two runs' final metrics key by key (keys of either run, sorted). The system/ metrics (CPU, memory,
    GPU sampled by the run's producer) measure the machine, not the training, and a short run may end before its
    first sample: they are not compared."""
    keys = sorted(k for k in set(original.final_metrics) | set(reproduced.final_metrics)
                  if not k.startswith(SYSTEM_METRIC_PREFIX))
    return Comparison(original=original, reproduced=reproduced, metrics=tuple(
        MetricMatch(k, original.final_metrics.get(k), reproduced.final_metrics.get(k)) for k in keys))
