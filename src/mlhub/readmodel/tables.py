"""The SQL read model's tables (SQLAlchemy Core). The schema itself is created only by the Alembic migrations in
top-level migrations/; these definitions must match them (a test compares the two).

Conventions: ids are the events' ids; times are UTC; `last_seq` is the stream sequence of the last event that
changed the row. A NaN metric value is stored as NULL (SQLite cannot store NaN), counted in `nan_count`.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
)
from sqlalchemy.dialects import postgresql

from mlhub.events import RunStatus

metadata = MetaData()

#: JSON on SQLite, JSONB on PostgreSQL.
Json = JSON().with_variant(postgresql.JSONB(), "postgresql")
Id = String(128)
Utc = DateTime(timezone=True)

#: The words of runs.status (mlhub.events.RunStatus; a stopped run is "killed").
RUN_STATUSES: tuple[str, ...] = tuple(status.value for status in RunStatus)
#: The words of jobs.status (a job's own: a stopped job is "cancelled", a done one "succeeded").
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")

experiments = Table(
    "experiments",
    metadata,
    Column("experiment_id", Id, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("tags", Json, nullable=False),
    Column("created_at", Utc, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    #: "active" or "deleted" (MLflow's soft delete; a deleted experiment can be restored).
    Column("lifecycle_stage", String(16), nullable=False, server_default="active"),
    Column("updated_at", Utc),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", Id, primary_key=True),
    Column("experiment_id", Id),
    Column("name", String(250)),
    Column("status", String(16), nullable=False),
    Column("source", String(16)),
    Column("job_id", Id),
    Column("reproduces_run_id", Id),
    Column("created_by", String(200)),
    Column("created_at", Utc),
    Column("started_at", Utc),
    Column("ended_at", Utc),
    Column("attempt", Integer),
    Column("worker_id", String(200)),
    Column("error_type", String(200)),
    Column("error", Text),
    Column("cancel_reason", Text),
    Column("config", Json),
    Column("config_sha256", String(64)),
    Column("config_overrides", Json),
    Column("seed", BigInteger),
    Column("seed_source", String(16)),
    Column("dataset_name", String(250)),
    Column("dataset_fingerprint", String(64)),
    Column("dataset_size_bytes", BigInteger),
    Column("dataset_num_examples", BigInteger),
    Column("git_commit", String(64)),
    Column("git_dirty", Boolean),
    Column("git_diff_sha256", String(64)),
    Column("git_repository", Text),
    Column("env_python", Text),
    Column("env_platform", Text),
    Column("env_torch", String(100)),
    Column("env_lightning", String(100)),
    Column("env_cuda", String(100)),
    Column("env_device_name", Text),
    Column("env_packages_sha256", String(64)),
    Column("updated_at", Utc, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    #: "active" or "deleted" (MLflow's soft delete; a deleted run can be restored).
    Column("lifecycle_stage", String(16), nullable=False, server_default="active"),
    Index("ix_runs_experiment_id", "experiment_id"),
    Index("ix_runs_status", "status"),
    Index("ix_runs_job_id", "job_id"),
)

params = Table(
    "params",
    metadata,
    Column("run_id", Id, primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
)

tags = Table(
    "tags",
    metadata,
    Column("run_id", Id, primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("value", Text, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
)

metric_summaries = Table(
    "metric_summaries",
    metadata,
    Column("run_id", Id, primary_key=True),
    Column("key", String(250), primary_key=True),
    #: The value at the highest (step, timestamp); NULL when that value is NaN.
    Column("last_value", Double),
    Column("last_step", BigInteger, nullable=False),
    Column("last_timestamp", BigInteger, nullable=False),
    #: Minimum and maximum over the non-NaN values (infinities included); NULL when every value is NaN.
    Column("min_value", Double),
    Column("max_value", Double),
    Column("count", BigInteger, nullable=False),
    Column("nan_count", BigInteger, nullable=False),
    #: Whether metric_definitions declares this key (configs/metrics.yaml); an undeclared key is kept and flagged.
    Column("declared", Boolean, nullable=False, server_default=false()),
    Column("last_seq", BigInteger, nullable=False),
)

#: One row per run, key and epoch: the epoch's last point (by step, then timestamp), what an epoch-level chart
#: or a "metrics per epoch" table shows. Every point stays in the metric tables (Parquet); this is the SQL view.
epoch_metrics = Table(
    "epoch_metrics",
    metadata,
    Column("run_id", Id, primary_key=True),
    Column("key", String(250), primary_key=True),
    Column("epoch", BigInteger, primary_key=True),
    #: NULL when the value is NaN.
    Column("value", Double),
    Column("step", BigInteger, nullable=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("run_id", Id, primary_key=True),
    Column("path", String(1000), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("uri", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("stored_at", Utc, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
)

#: The datasets a run recorded (run.dataset_version_recorded; MLflow's dataset inputs), one row per name and
#: digest (the fingerprint when the producer gave no digest).
run_inputs = Table(
    "run_inputs",
    metadata,
    Column("run_id", Id, primary_key=True),
    Column("name", String(250), primary_key=True),
    Column("digest", String(64), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("source_type", String(36)),
    Column("source", Text),
    Column("schema_text", Text),
    Column("profile", Text),
    Column("context", String(250)),
    Column("num_examples", BigInteger),
    Column("last_seq", BigInteger, nullable=False),
)

#: Models a run logged (run.logged_model_recorded; MLflow 3's logged models): the last record of each id.
logged_models = Table(
    "logged_models",
    metadata,
    Column("model_id", Id, primary_key=True),
    Column("run_id", Id, nullable=False),
    Column("experiment_id", Id),
    Column("name", String(250), nullable=False),
    Column("artifact_path", String(1000), nullable=False),
    Column("status", String(16), nullable=False),
    Column("model_type", String(250)),
    Column("params", Json, nullable=False),
    Column("tags", Json, nullable=False),
    Column("lifecycle_stage", String(16), nullable=False),
    Column("created_at", Utc, nullable=False),
    Column("updated_at", Utc, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Index("ix_logged_models_run_id", "run_id"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", Id, primary_key=True),
    Column("run_id", Id),
    Column("experiment_id", Id),
    Column("plugin", String(200)),
    Column("pool", String(16)),
    Column("status", String(16), nullable=False),
    Column("config", Json),
    Column("config_sha256", String(64)),
    Column("timeout_s", Double),
    Column("max_attempts", Integer),
    #: The highest attempt started so far (0 before the first).
    Column("attempts", Integer, nullable=False),
    Column("worker_id", String(200)),
    Column("queued_at", Utc),
    Column("started_at", Utc),
    Column("ended_at", Utc),
    Column("heartbeat_at", Utc),
    Column("progress", Double),
    Column("error_type", String(200)),
    Column("error", Text),
    Column("retryable", Boolean),
    Column("cancel_reason", Text),
    Column("cancelled_by", String(200)),
    Column("updated_at", Utc, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Index("ix_jobs_status", "status"),
    Index("ix_jobs_run_id", "run_id"),
)

registered_models = Table(
    "registered_models",
    metadata,
    Column("model_name", Id, primary_key=True),
    Column("created_at", Utc, nullable=False),
    Column("latest_version", Integer),
    Column("updated_at", Utc, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("description", Text),
    Column("tags", Json),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("model_name", Id, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("run_id", Id, nullable=False),
    Column("artifact_path", String(1000), nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("description", Text, nullable=False),
    Column("registered_by", String(200)),
    Column("registered_at", Utc, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("tags", Json),
    Index("ix_model_versions_run_id", "run_id"),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("model_name", Id, primary_key=True),
    Column("alias", Id, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("set_by", String(200), nullable=False),
    Column("set_at", Utc, nullable=False),
    Column("reason", Text, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
)

#: Every alias change, one row per event (the primary key is the event's stream sequence).
model_alias_history = Table(
    "model_alias_history",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("model_name", Id, nullable=False),
    Column("alias", Id, nullable=False),
    Column("action", String(16), nullable=False),  # "set" or "removed"
    Column("from_version", Integer),
    Column("to_version", Integer),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=False),
    Column("occurred_at", Utc, nullable=False),
    Index("ix_model_alias_history_model", "model_name", "alias"),
)

metric_definitions = Table(
    "metric_definitions",
    metadata,
    #: Any metric key (`val_acc`, `train/loss`, `val/acc@top1`); its event subject token is metric_aggregate_id(name).
    Column("name", String(250), primary_key=True),
    Column("direction", String(8), nullable=False),
    Column("unit", String(50), nullable=False),
    Column("description", Text, nullable=False),
    Column("min_value", Double),
    Column("max_value", Double),
    #: 1 when defined, +1 per migration.
    Column("revision", Integer, nullable=False),
    Column("last_migration_id", String(200)),
    Column("defined_at", Utc, nullable=False),
    Column("updated_at", Utc, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
)

audit_seals = Table(
    "audit_seals",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("chain", Id, nullable=False),
    Column("first_seq", BigInteger, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("message_count", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("previous_digest", String(64)),
    Column("algorithm", String(32), nullable=False),
    Column("sealed_at", Utc, nullable=False),
)

projector_checkpoints = Table(
    "projector_checkpoints",
    metadata,
    Column("projector", String(100), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", Utc, nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("projector", String(100), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("subject", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("recorded_at", Utc, nullable=False),
)
