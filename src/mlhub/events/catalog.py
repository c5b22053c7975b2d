"""The event catalogue: every event class, listed by hand, and the lookup by type string."""

from __future__ import annotations

from mlhub.events.audit import AuditSealed
from mlhub.events.base import DomainEvent
from mlhub.events.experiment import (
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagsSet,
)
from mlhub.events.job import JobCancelled, JobFailed, JobHeartbeat, JobQueued, JobStarted, JobSucceeded
from mlhub.events.metric import MetricDefined, MetricMigrated
from mlhub.events.model import (
    ModelAliasRemoved,
    ModelAliasSet,
    ModelCreated,
    ModelDeleted,
    ModelUpdated,
    ModelVersionDeleted,
    ModelVersionRegistered,
)
from mlhub.events.run import (
    ArtifactStored,
    CodeVersionRecorded,
    ConfigSnapshotted,
    DatasetVersionRecorded,
    EnvironmentRecorded,
    LoggedModelRecorded,
    MetricsLogged,
    ParamsLogged,
    RunCancelled,
    RunCrashed,
    RunCreated,
    RunDeleted,
    RunFailed,
    RunFinished,
    RunHeartbeat,
    RunRenamed,
    RunRestored,
    RunResumed,
    RunStarted,
    SeedRecorded,
    TagsDeleted,
    TagsSet,
)
from mlhub.events.token import TokenIssued, TokenRevoked

EVENT_CLASSES: tuple[type[DomainEvent], ...] = (
    ExperimentCreated,
    RunCreated,
    RunStarted,
    RunFinished,
    RunFailed,
    RunCancelled,
    RunHeartbeat,
    RunCrashed,
    RunResumed,
    ConfigSnapshotted,
    SeedRecorded,
    DatasetVersionRecorded,
    CodeVersionRecorded,
    EnvironmentRecorded,
    ParamsLogged,
    TagsSet,
    MetricsLogged,
    ArtifactStored,
    JobQueued,
    JobStarted,
    JobHeartbeat,
    JobSucceeded,
    JobFailed,
    JobCancelled,
    ModelVersionRegistered,
    ModelAliasSet,
    ModelAliasRemoved,
    MetricDefined,
    MetricMigrated,
    AuditSealed,
    ExperimentRenamed,
    ExperimentDeleted,
    ExperimentRestored,
    ExperimentTagsSet,
    RunDeleted,
    RunRestored,
    RunRenamed,
    TagsDeleted,
    LoggedModelRecorded,
    ModelCreated,
    ModelUpdated,
    ModelVersionDeleted,
    ModelDeleted,
    TokenIssued,
    TokenRevoked,
)


def _build_registry() -> dict[str, type[DomainEvent]]:
    registry: dict[str, type[DomainEvent]] = {}
    for cls in EVENT_CLASSES:
        if cls.event_type in registry:
            raise RuntimeError(f"event type {cls.event_type!r} is declared twice")
        if cls.event_type.split(".", 1)[0] != cls.aggregate_type:
            raise RuntimeError(f"event type {cls.event_type!r} does not start with {cls.aggregate_type!r}")
        registry[cls.event_type] = cls
    return registry


EVENT_TYPES: dict[str, type[DomainEvent]] = _build_registry()
AGGREGATE_TYPES: frozenset[str] = frozenset(cls.aggregate_type for cls in EVENT_CLASSES)
