"""The one settings class: every knob is an `MLHUB_*` environment variable (or a `.env` file entry)."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The promotion gates file when MLHUB_REGISTRY_GATES is unset (relative to the working directory).
DEFAULT_REGISTRY_GATES = Path("configs") / "registry.yaml"
#: Seconds between system-metric samples of a run (MLHUB_SYSTEM_METRICS_S); the SDK's and the worker's default.
DEFAULT_SYSTEM_METRICS_S = 15.0


class Settings(BaseSettings):
    """mlhub's settings. Constructing it does no I/O beyond reading the environment."""

    model_config = SettingsConfigDict(env_prefix="MLHUB_", env_file=".env", extra="ignore")

    #: Where the embedded stack keeps its state (JetStream store, read model, metric tables, artifacts).
    data_dir: Path = Path(".mlhub")
    #: Use this NATS server (or cluster, comma-separated URLs) and start none. Unset: the embedded server.
    nats_url: str | None = None
    #: The event log's credentials: a file holding one line `user:password`, or a NATS `.creds` file (JWT and
    #: NKEY seed, needs the `nkeys` package). Unset: the URL's own `nats://user:password@host` if any; with no
    #: MLHUB_NATS_URL, the embedded server's admin credentials from <data_dir>/nats/credentials/admin.
    #: `mlhub up` gives each of its parts the file of that part's role.
    nats_creds: Path | None = None
    #: TLS to the event log: the CA file that signed the servers' certificates (unset: the system's CAs; a
    #: `tls://` URL or a server that requires TLS turns TLS on), and a client certificate with its key (both or
    #: neither) for servers that verify clients.
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    #: Port of the embedded nats-server; 0 picks a free port (written to <data_dir>/nats/server.json).
    nats_port: Annotated[int, Field(ge=0, le=65535)] = 0
    #: fsync policy of the embedded server's JetStream store: "always" fsyncs before every acknowledgement
    #: (no acknowledged event is lost on power loss), or a Go duration such as "1s" or "2m" (the server's
    #: default is 2m: faster, but acknowledged events of the last interval can be lost on power loss).
    nats_sync: str = "always"
    #: Replicas of the event stream: 1 for one server, 3 for a cluster.
    stream_replicas: Annotated[int, Field(ge=1, le=5)] = 1
    #: How long the stream remembers event ids to drop duplicate appends (seconds).
    duplicate_window_s: Annotated[float, Field(gt=0, le=86_400)] = 600.0
    #: How long an append waits for an acknowledgement before it retries (seconds).
    ack_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    #: Seconds between the client's pings to its NATS server; two unanswered pings mark the connection dead
    #: and the client reconnects (to another server of a cluster). Bounds how long a part waits on a server whose
    #: host was cut off (the TCP connection then never closes by itself).
    nats_ping_interval_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    #: How long an append keeps retrying through a lost connection before EventLogUnavailable (seconds).
    append_deadline_s: Annotated[float, Field(gt=0)] = 60.0
    #: SQLAlchemy URL of the SQL read model; unset: SQLite at <data_dir>/readmodel.db.
    #: PostgreSQL: postgresql+psycopg://user@host:5432/db
    database_url: str | None = None
    #: Where artifacts are stored: `file:///abs/path` (or a plain path) or `s3://bucket/prefix` (S3-compatible;
    #: credentials and region from the standard AWS_* variables). Unset: file://<data_dir>/artifacts.
    artifact_uri: str | None = None
    #: Where the metric tables (Delta Lake) live: a local path / `file:///abs/path`, or `s3://bucket/prefix` on
    #: S3-compatible storage (credentials and region from the AWS_* variables, endpoint MLHUB_S3_ENDPOINT_URL),
    #: which API replicas on other hosts read. Unset: <data_dir>/metrics.
    metrics_uri: str | None = None
    #: Endpoint of an S3-compatible service (MinIO, Ceph, moto, ...) for s3:// artifact and metric URIs, e.g.
    #: http://127.0.0.1:9000. Unset: boto3's own resolution (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS S3).
    s3_endpoint_url: str | None = None
    #: Seconds between audit seals written by `mlhub projector` (0: never; `mlhub audit seal` seals at once).
    seal_interval_s: Annotated[float, Field(ge=0)] = 60.0
    #: Seconds between compactions of the metric tables' small files by `mlhub projector` (0: never).
    compact_interval_s: Annotated[float, Field(ge=0)] = 60.0
    #: The model registry's promotion gates file (YAML); unset: configs/registry.yaml when it exists (see
    #: gates_file, the one place that resolves it).
    registry_gates: Path | None = None
    #: A logged metric key that configs/metrics.yaml does not declare: "keep" stores it and flags it
    #: (metric_summaries.declared, the undeclared_metrics view); "reject" makes the worker fail the run with
    #: UNDECLARED_METRIC before the point is sent (the declared names are read from the event log per attempt).
    undeclared_metrics: Literal["keep", "reject"] = "keep"
    #: Bearer tokens of the REST API with their roles: "token:role,token:role" (roles: reader, writer, admin).
    api_tokens: str | None = None
    #: A file of API tokens, one "token:role" a line ('#' starts a comment); read when the API starts.
    api_tokens_file: Path | None = None
    #: Let GET requests (reads) through without a token; writes still need a writer or admin token.
    api_open_reads: bool = False
    #: Aliases only an admin token may set or move (promotion to production).
    api_protected_aliases: str = "production,prod,champion"
    #: Longest a read with min_seq waits for the projections to reach that sequence (seconds).
    api_min_seq_wait_s: Annotated[float, Field(ge=0, le=60)] = 5.0
    #: /readyz answers 503 while any projector is more than this many stream messages behind.
    api_ready_max_lag: Annotated[int, Field(ge=0)] = 10_000
    #: Most rows a /query answer returns (the rest is cut off and the answer says so).
    api_query_max_rows: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    #: Longest a /query runs before it is interrupted (seconds); the wait for a query worker is not counted.
    api_query_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    #: Largest /query answer (bytes of its JSON); the rows past it are cut off and the answer says so
    #: (`truncated_by: "bytes"`).
    api_query_max_bytes: Annotated[int, Field(ge=1024, le=1024**3)] = 16 * 1024 * 1024
    #: DuckDB memory_limit of each of the API's query engines (MiB); a query over it is a 422 QUERY_OUT_OF_MEMORY
    #: (DuckDB never spills to a temporary directory in the API).
    api_query_memory_mb: Annotated[int, Field(ge=16, le=1024**2)] = 256
    #: DuckDB threads of each of the API's query engines (shared by the queries running on it).
    api_query_threads: Annotated[int, Field(ge=1, le=256)] = 2
    #: Most /query requests one API process takes at once (running or waiting for a worker); one more is a 429
    #: TOO_MANY_QUERIES with Retry-After.
    api_query_max_concurrent: Annotated[int, Field(ge=1, le=10_000)] = 16
    #: How many of those run at once, on the API's query threads (the others wait, in order).
    api_query_workers: Annotated[int, Field(ge=1, le=256)] = 4
    #: Let POST /query through without a token. MLHUB_API_OPEN_READS never does: a query costs far more than a GET.
    api_open_query: bool = False
    #: Largest request body the API reads (bytes); a larger one is refused with 413 before it is read.
    api_max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    #: Most params + tags + metric keys one tracking request may carry (MLflow's log-batch allows 1,000).
    api_max_keys_per_request: Annotated[int, Field(ge=1, le=100_000)] = 1_000
    #: Most metric points one tracking request may carry.
    api_max_points_per_request: Annotated[int, Field(ge=1, le=100_000_000)] = 1_000_000
    #: Largest experiment config a job may be submitted with (bytes of its canonical JSON) and its deepest nesting.
    api_max_config_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024
    api_max_config_depth: Annotated[int, Field(ge=2, le=200)] = 32
    #: The reaper (in `mlhub projector`, one active instance) ends a running run as `crashed` when nothing of it
    #: (no metric batch, heartbeat, or its job's heartbeat) was appended for this long (seconds).
    run_dead_after_s: Annotated[float, Field(gt=0)] = 300.0
    #: Seconds between the reaper's sweeps.
    reaper_interval_s: Annotated[float, Field(gt=0)] = 30.0
    #: How often the API looks for new metric-table commits (seconds); a read with min_seq looks at once.
    api_metrics_refresh_s: Annotated[float, Field(ge=0)] = 1.0
    #: `mlhub up` restarts a part that died (with backoff); more than this many restarts of one part within
    #: 60 s and it stops the whole hub, naming the part (0: never restart, the first death stops the hub).
    hub_max_restarts_per_min: Annotated[int, Field(ge=0, le=1000)] = 5
    #: A worker runs each job in a child process with this address-space limit (MiB, RLIMIT_AS); a job that
    #: needs more fails with JOB_OUT_OF_MEMORY and the worker goes on. Unset: no limit.
    job_memory_mb: Annotated[int, Field(ge=64)] | None = None
    #: After a cancel, timeout or worker shutdown, how long a job's process may take to stop after its current
    #: batch before it is killed (seconds).
    job_kill_grace_s: Annotated[float, Field(ge=0, le=600)] = 2.0
    #: The hub the CLI's client commands (submit, runs, show, query, ...) talk to, unless MLHUB_NATS_URL is set
    #: or --direct is given (then they use the event log and read model directly).
    url: str = "http://127.0.0.1:8000"
    #: The API token the CLI sends; unset: the admin token of a local `mlhub up` serving MLHUB_URL from
    #: MLHUB_DATA_DIR (its <data_dir>/api-token), else none.
    token: str | None = None
    #: The SDK: where unsent batches are spilled (JSON lines, fsync'd); unset: ~/.mlhub/spool.
    spool_dir: Path | None = None
    #: A run's producer (SDK sender, worker) sends a heartbeat when it has sent nothing else for this long (s).
    run_heartbeat_s: Annotated[float, Field(gt=0)] = 30.0
    #: Seconds between samples of a run's system metrics (system/cpu_percent, system/memory_mb and, where an
    #: NVIDIA GPU is in use, system/gpu_utilization, system/gpu_memory_mb), taken by a thread of the SDK's script,
    #: and by the worker, from its own process, for a job's process (docs/tracking.md#system-metrics). 0: none.
    system_metrics_s: Annotated[float, Field(ge=0, le=86_400)] = DEFAULT_SYSTEM_METRICS_S
    #: Name recorded as the producer of events this process appends.
    producer: str = Field(default_factory=lambda: f"mlhub@{socket.gethostname()}")

    def gates_file(self) -> Path | None:
        """The promotion gates file, as an absolute path: MLHUB_REGISTRY_GATES, else DEFAULT_REGISTRY_GATES of the
        working directory when it exists, else None (no gates). Its reader resolves it once (the API when it
        starts, the CLI per command), so a later change of directory changes nothing; the file itself is read at
        each promotion, so an edit applies without a restart."""
        if self.registry_gates is not None:
            return self.registry_gates.absolute()
        return DEFAULT_REGISTRY_GATES.absolute() if DEFAULT_REGISTRY_GATES.is_file() else None

    @field_validator("nats_sync")
    @classmethod
    def _sync_policy(cls, value: str) -> str:
        if value != "always" and not re.fullmatch(r"\d+(ms|s|m|h)", value):
            raise ValueError(f"must be 'always' or a duration like '1s', '500ms', '2m'; got {value!r}")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        if value and not re.fullmatch(r"https?://[^/?#\s]+/?", value):
            raise ValueError(f"must be an http:// or https:// URL of the S3 endpoint (no path); got {value!r}")
        return value or None

    @field_validator("metrics_uri")
    @classmethod
    def _metrics_uri(cls, value: str | None) -> str | None:
        if value and "://" in value and not re.fullmatch(r"(s3://[^/\s]+/[^\s]*[^/\s][^\s]*|file:///\S*)", value):
            raise ValueError(f"must be a local path, file:///abs/path or s3://bucket/prefix; got {value!r}")
        return value or None

    @field_validator("url")
    @classmethod
    def _hub_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", value):
            raise ValueError(f"must be the hub's http:// or https:// URL, e.g. http://127.0.0.1:8000; got {value!r}")
        return value.rstrip("/")

    @property
    def resolved_database_url(self) -> str:
        """The read model's database URL (the SQLite default made explicit)."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'readmodel.db').resolve()}"

    @property
    def resolved_artifact_uri(self) -> str:
        """The artifact store's URI (the local default, file://<data_dir>/artifacts, made explicit)."""
        return self.artifact_uri or (self.data_dir / "artifacts").resolve().as_uri()

    @property
    def metrics_dir(self) -> Path:
        """The local folder of the metric tables when MLHUB_METRICS_URI is unset (see analytics.location)."""
        return self.data_dir / "metrics"

    @property
    def hub_parts_file(self) -> Path:
        """Where `mlhub up` keeps the state of each of its parts (JSON, replaced atomically); /readyz reads it."""
        return self.data_dir / "hub-parts.json"

    @property
    def nats_dir(self) -> Path:
        """Folder of the embedded nats-server: config, JetStream store, logs, the server file."""
        return self.data_dir / "nats"
