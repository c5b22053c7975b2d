"""What the MLflow-compatible API and `mlhub import mlflow` need in the read model.

Revision ID: 0006_mlflow_compat
Revises: 0005_metric_definition_names
Create Date: 2026-12-03

Soft deletion of experiments and runs (lifecycle_stage, as MLflow's), a run's dataset inputs (run_inputs),
logged models (MLflow 3), descriptions and tags of registered models and tags of model versions. Rows projected
before this revision get the defaults (active, no inputs, no tags); a replay fills everything.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_mlflow_compat"
down_revision: str | None = "0005_metric_definition_names"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("lifecycle_stage", sa.String(length=16), nullable=False,
                                   server_default="active"))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("lifecycle_stage", sa.String(length=16), nullable=False,
                                   server_default="active"))
    with op.batch_alter_table("registered_models") as batch:
        batch.add_column(sa.Column("description", sa.Text(), nullable=True))
        batch.add_column(sa.Column("tags", _JSON, nullable=True))
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("tags", _JSON, nullable=True))
    op.create_table(
        "run_inputs",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=250), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("source_type", sa.String(length=36), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("schema_text", sa.Text(), nullable=True),
        sa.Column("profile", sa.Text(), nullable=True),
        sa.Column("context", sa.String(length=250), nullable=True),
        sa.Column("num_examples", sa.BigInteger(), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "name", "digest"),
    )
    op.create_table(
        "logged_models",
        sa.Column("model_id", sa.String(length=128), nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("experiment_id", sa.String(length=128), nullable=True),
        sa.Column("name", sa.String(length=250), nullable=False),
        sa.Column("artifact_path", sa.String(length=1000), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("model_type", sa.String(length=250), nullable=True),
        sa.Column("params", _JSON, nullable=False),
        sa.Column("tags", _JSON, nullable=False),
        sa.Column("lifecycle_stage", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("model_id"),
    )
    op.create_index("ix_logged_models_run_id", "logged_models", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_logged_models_run_id", table_name="logged_models")
    op.drop_table("logged_models")
    op.drop_table("run_inputs")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("tags")
    with op.batch_alter_table("registered_models") as batch:
        batch.drop_column("tags")
        batch.drop_column("description")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("lifecycle_stage")
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("updated_at")
        batch.drop_column("lifecycle_stage")
