"""What the registry needs to know about a run, read from the run's own events (not the read model).

Reading the log makes register and the promotion gates correct without a projector, and exactly as current
as the log itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mlhub.eventlog import EventLog
from mlhub.events import (
    SUBJECT_PREFIX,
    ArtifactStored,
    ConfigSnapshotted,
    RunStatus,
    final_metrics,
    run_lifecycle,
)


@dataclass
class RunFacts:
    """A run as its events tell it: status, config hash, final metric values and stored artifacts."""

    run_id: str
    exists: bool = False
    #: mlhub.events.RunLifecycle's status (queued before any lifecycle event).
    status: RunStatus = RunStatus.QUEUED
    config_sha256: str | None = None
    #: The final value of each metric key (mlhub.events.final_metrics: the last attempt's point with the highest
    #: (step, timestamp), the rule `mlhub reproduce` uses too). NaN stays NaN.
    final_metrics: dict[str, float] = field(default_factory=dict)
    #: Logical artifact path -> the artifact.stored event (a later one of the same path replaces it).
    artifacts: dict[str, ArtifactStored] = field(default_factory=dict)


async def read_run(event_log: EventLog, run_id: str) -> RunFacts:
    """The facts of one run from the event log (exists=False when no event of it was stored)."""
    recorded = await event_log.read_aggregate("run", run_id)
    facts = RunFacts(run_id=run_id)
    events = [r.envelope.event for r in recorded.events]
    facts.final_metrics = final_metrics(events)
    lifecycle = run_lifecycle(events)
    facts.exists = lifecycle.created
    facts.status = lifecycle.status or RunStatus.QUEUED
    for e in events:
        if isinstance(e, ConfigSnapshotted):
            facts.config_sha256 = e.sha256
        elif isinstance(e, ArtifactStored):
            facts.artifacts[e.path] = e
    return facts


async def runs_with_config(event_log: EventLog, config_sha256: str) -> list[str]:
    """Ids of every run whose config snapshot has this sha256, in the order they were snapshotted.

    Scans the `run.config_snapshotted` subjects only (one small event per run).
    """
    found: list[str] = []
    async for r in event_log.replay(subject_filter=f"{SUBJECT_PREFIX}.run.*.config_snapshotted"):
        e = r.envelope.event
        if isinstance(e, ConfigSnapshotted) and e.sha256 == config_sha256 and e.run_id not in found:
            found.append(e.run_id)
    return found


def same_value(a: float, b: float, tolerance: float) -> bool:
    """Whether two final metric values agree within an absolute tolerance (NaN agrees with nothing)."""
    if math.isnan(a) or math.isnan(b):
        return False
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tolerance
