"""The event log on NATS JetStream: stream setup, append, bulk append, aggregate reads, replay, and the
embedded nats-server launcher with its users and permissions. Imports only `mlhub.events` (and `mlhub.errors`,
`mlhub.settings`) of mlhub."""

from mlhub.eventlog.auth import (
    ROLE_PERMISSIONS,
    ROLES,
    NatsAuth,
    UserPassword,
    credentials_file,
    private_dir,
    redact_url,
)
from mlhub.eventlog.client import (
    MAX_ATOMIC_BATCH,
    AggregateEvents,
    AppendResult,
    EventLog,
    Recorded,
    StoredMessage,
)
from mlhub.eventlog.reads import declared_metric_names
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
    "EmbeddedNats",
    "EventLog",
    "NatsAuth",
    "Recorded",
    "SealReport",
    "StoredMessage",
    "StreamSpec",
    "UserPassword",
    "credentials_file",
    "declared_metric_names",
    "ensure_stream",
    "nats_endpoint",
    "nats_server_binary",
    "private_dir",
    "redact_url",
    "run_sealer",
    "running_embedded_url",
    "seal",
    "seal_digest",
    "verify_seals",
    "worker_consumer_name",
]
