"""The SQL read model: experiments, runs and what they logged, jobs, the model registry, metric definitions,
audit seals, projector checkpoints and dead letters.

Revision ID: 0001_read_model
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_read_model"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
ID = sa.String(length=128)
UTC = sa.DateTime(timezone=True)


def _seq(name: str = "last_seq") -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=False)


def upgrade() -> None:
    """Create every table of the read model."""
    op.create_table(
        "experiments",
        sa.Column("experiment_id", ID, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        _seq(),
        sa.PrimaryKeyConstraint("experiment_id"),
    )
    op.create_table(
        "runs",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("experiment_id", ID, nullable=True),
        sa.Column("name", sa.String(length=250), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=True),
        sa.Column("job_id", ID, nullable=True),
        sa.Column("reproduces_run_id", ID, nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", UTC, nullable=True),
        sa.Column("started_at", UTC, nullable=True),
        sa.Column("ended_at", UTC, nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("worker_id", sa.String(length=200), nullable=True),
        sa.Column("error_type", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("config", JSON, nullable=True),
        sa.Column("config_sha256", sa.String(length=64), nullable=True),
        sa.Column("config_overrides", JSON, nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("seed_source", sa.String(length=16), nullable=True),
        sa.Column("dataset_name", sa.String(length=250), nullable=True),
        sa.Column("dataset_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("dataset_size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("dataset_num_examples", sa.BigInteger(), nullable=True),
        sa.Column("git_commit", sa.String(length=64), nullable=True),
        sa.Column("git_dirty", sa.Boolean(), nullable=True),
        sa.Column("git_diff_sha256", sa.String(length=64), nullable=True),
        sa.Column("git_repository", sa.Text(), nullable=True),
        sa.Column("env_python", sa.Text(), nullable=True),
        sa.Column("env_platform", sa.Text(), nullable=True),
        sa.Column("env_torch", sa.String(length=100), nullable=True),
        sa.Column("env_lightning", sa.String(length=100), nullable=True),
        sa.Column("env_cuda", sa.String(length=100), nullable=True),
        sa.Column("env_device_name", sa.Text(), nullable=True),
        sa.Column("env_packages_sha256", sa.String(length=64), nullable=True),
        sa.Column("updated_at", UTC, nullable=False),
        _seq(),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.create_index("ix_runs_experiment_id", "runs", ["experiment_id"])
    op.create_index("ix_runs_job_id", "runs", ["job_id"])
    op.create_index("ix_runs_status", "runs", ["status"])
    for name in ("params", "tags"):
        op.create_table(
            name,
            sa.Column("run_id", ID, nullable=False),
            sa.Column("key", sa.String(length=250), nullable=False),
            sa.Column("value", sa.Text(), nullable=False),
            _seq(),
            sa.PrimaryKeyConstraint("run_id", "key"),
        )
    op.create_table(
        "metric_summaries",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("last_value", sa.Double(), nullable=True),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("last_timestamp", sa.BigInteger(), nullable=False),
        sa.Column("min_value", sa.Double(), nullable=True),
        sa.Column("max_value", sa.Double(), nullable=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("nan_count", sa.BigInteger(), nullable=False),
        _seq(),
        sa.PrimaryKeyConstraint("run_id", "key"),
    )
    op.create_table(
        "artifacts",
        sa.Column("run_id", ID, nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("stored_at", UTC, nullable=False),
        _seq(),
        sa.PrimaryKeyConstraint("run_id", "path"),
    )
    op.create_table(
        "jobs",
        sa.Column("job_id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=True),
        sa.Column("experiment_id", ID, nullable=True),
        sa.Column("plugin", sa.String(length=200), nullable=True),
        sa.Column("pool", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("config", JSON, nullable=True),
        sa.Column("config_sha256", sa.String(length=64), nullable=True),
        sa.Column("timeout_s", sa.Double(), nullable=True),
        sa.Column("max_attempts", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.String(length=200), nullable=True),
        sa.Column("queued_at", UTC, nullable=True),
        sa.Column("started_at", UTC, nullable=True),
        sa.Column("ended_at", UTC, nullable=True),
        sa.Column("heartbeat_at", UTC, nullable=True),
        sa.Column("progress", sa.Double(), nullable=True),
        sa.Column("error_type", sa.String(length=200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("retryable", sa.Boolean(), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("cancelled_by", sa.String(length=200), nullable=True),
        sa.Column("updated_at", UTC, nullable=False),
        _seq(),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_index("ix_jobs_run_id", "jobs", ["run_id"])
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "registered_models",
        sa.Column("model_name", ID, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("latest_version", sa.Integer(), nullable=True),
        sa.Column("updated_at", UTC, nullable=False),
        _seq(),
        sa.PrimaryKeyConstraint("model_name"),
    )
    op.create_table(
        "model_versions",
        sa.Column("model_name", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("artifact_path", sa.String(length=1000), nullable=False),
        sa.Column("artifact_sha256", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("registered_by", sa.String(length=200), nullable=True),
        sa.Column("registered_at", UTC, nullable=False),
        _seq(),
        sa.PrimaryKeyConstraint("model_name", "version"),
    )
    op.create_index("ix_model_versions_run_id", "model_versions", ["run_id"])
    op.create_table(
        "model_aliases",
        sa.Column("model_name", ID, nullable=False),
        sa.Column("alias", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("set_by", sa.String(length=200), nullable=False),
        sa.Column("set_at", UTC, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _seq(),
        sa.PrimaryKeyConstraint("model_name", "alias"),
    )
    op.create_table(
        "model_alias_history",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("model_name", ID, nullable=False),
        sa.Column("alias", ID, nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("occurred_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_model_alias_history_model", "model_alias_history", ["model_name", "alias"])
    op.create_table(
        "metric_definitions",
        sa.Column("name", ID, nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("unit", sa.String(length=50), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("min_value", sa.Double(), nullable=True),
        sa.Column("max_value", sa.Double(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("last_migration_id", sa.String(length=200), nullable=True),
        sa.Column("defined_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        _seq(),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "audit_seals",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("chain", ID, nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("message_count", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("previous_digest", sa.String(length=64), nullable=True),
        sa.Column("algorithm", sa.String(length=32), nullable=False),
        sa.Column("sealed_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "projector_checkpoints",
        sa.Column("projector", sa.String(length=100), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("projector"),
    )
    op.create_table(
        "dead_letters",
        sa.Column("projector", sa.String(length=100), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("recorded_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("projector", "seq"),
    )


def downgrade() -> None:
    """Drop every table of the read model."""
    for name in (
        "dead_letters", "projector_checkpoints", "audit_seals", "metric_definitions", "model_alias_history",
        "model_aliases", "model_versions", "registered_models", "jobs", "artifacts", "metric_summaries", "tags",
        "params", "runs", "experiments",
    ):
        op.drop_table(name)
