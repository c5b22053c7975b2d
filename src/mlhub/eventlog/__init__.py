"""The event log on NATS JetStream: stream setup, append, bulk append, aggregate reads, replay, backup and
restore (JetStream snapshots), and the embedded nats-server launcher with its users and permissions. Imports only
`mlhub.events` (and `mlhub.errors`, `mlhub.settings`) of mlhub."""

from mlhub.eventlog.auth import (
    ROLE_PERMISSIONS,
    ROLES,
    NatsAuth,
    UserPassword,
    credentials_file,
    private_dir,
    redact_url,
)
from mlhub.eventlog.backup import BackupManifest, backup_stream, read_backup
from mlhub.eventlog.client import (
    MAX_ATOMIC_BATCH,
    AggregateEvents,
    AppendResult,
    EventLog,
    Recorded,
    StoredMessage,
)
from mlhub.eventlog.reads import declared_metric_names
from mlhub.eventlog.restore import RestoreReport, restore_stream
from mlhub.eventlog.seals import SealReport, run_sealer, seal, seal_digest, verify_seals
from mlhub.eventlog.server import EmbeddedNats, nats_endpoint, nats_server_binary, running_embedded_url
from mlhub.eventlog.stream import MAX_EVENT_BYTES, STREAM_NAME, StreamSpec, ensure_stream, worker_consumer_name

__all__ = [
    "MAX_ATOMIC_BATCH",
    "MAX_EVENT_BYTES",
    "ROLES",
    "ROLE_PERMISSIONS",
    "STREAM_NAME",
    "AggregateEvents",
    "AppendResult",
    "BackupManifest",
    "EmbeddedNats",
    "EventLog",
    "NatsAuth",
    "Recorded",
    "RestoreReport",
    "SealReport",
    "StoredMessage",
    "StreamSpec",
    "UserPassword",
    "backup_stream",
    "credentials_file",
    "declared_metric_names",
    "ensure_stream",
    "nats_endpoint",
    "nats_server_binary",
    "private_dir",
    "read_backup",
    "redact_url",
    "restore_stream",
    "run_sealer",
    "running_embedded_url",
    "seal",
    "seal_digest",
    "verify_seals",
    "worker_consumer_name",
]
