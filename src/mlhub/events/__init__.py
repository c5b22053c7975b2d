"""The event catalogue: frozen, versioned pydantic events, the envelope, subjects and the serializer.

This package does no I/O and imports nothing of mlhub but `mlhub.errors`.
"""

from mlhub.events.audit import AuditSealed
from mlhub.events.base import DomainEvent, canonical_json, sha256_of
from mlhub.events.catalog import AGGREGATE_TYPES, EVENT_CLASSES, EVENT_TYPES
from mlhub.events.envelope import (
    STREAM_SUBJECTS,
    SUBJECT_PREFIX,
    Envelope,
    aggregate_subject_filter,
    decode,
    encode,
    event_subject,
    to_json_dict,
)
from mlhub.events.experiment import ExperimentCreated
from mlhub.events.folds import final_metrics
from mlhub.events.job import JobCancelled, JobFailed, JobHeartbeat, JobQueued, JobStarted, JobSucceeded
from mlhub.events.metric import MetricDefined, MetricMigrated, MetricSpec
from mlhub.events.model import ModelAliasRemoved, ModelAliasSet, ModelVersionRegistered
from mlhub.events.run import (
    ArtifactStored,
    CodeVersionRecorded,
    ConfigSnapshotted,
    DatasetVersionRecorded,
    EnvironmentRecorded,
    MetricPoint,
    MetricSeries,
    MetricsLogged,
    ParamsLogged,
    RunCancelled,
    RunCreated,
    RunFailed,
    RunFinished,
    RunStarted,
    SeedRecorded,
    TagsSet,
)
from mlhub.events.upcasting import UPCASTERS, upcast

__all__ = [
    "final_metrics",
    "AGGREGATE_TYPES",
    "EVENT_CLASSES",
    "EVENT_TYPES",
    "STREAM_SUBJECTS",
    "SUBJECT_PREFIX",
    "UPCASTERS",
    "ArtifactStored",
    "AuditSealed",
    "CodeVersionRecorded",
    "ConfigSnapshotted",
    "DatasetVersionRecorded",
    "DomainEvent",
    "EnvironmentRecorded",
    "Envelope",
    "ExperimentCreated",
    "JobCancelled",
    "JobFailed",
    "JobHeartbeat",
    "JobQueued",
    "JobStarted",
    "JobSucceeded",
    "MetricDefined",
    "MetricMigrated",
    "MetricPoint",
    "MetricSeries",
    "MetricSpec",
    "MetricsLogged",
    "ModelAliasRemoved",
    "ModelAliasSet",
    "ModelVersionRegistered",
    "ParamsLogged",
    "RunCancelled",
    "RunCreated",
    "RunFailed",
    "RunFinished",
    "RunStarted",
    "SeedRecorded",
    "TagsSet",
    "aggregate_subject_filter",
    "canonical_json",
    "decode",
    "encode",
    "event_subject",
    "sha256_of",
    "to_json_dict",
    "upcast",
]
