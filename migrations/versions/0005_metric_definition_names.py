"""metric_definitions.name holds any metric key (up to 250 characters, like metric_summaries.key).

Revision ID: 0005_metric_definition_names
Revises: 0004_run_status_killed
Create Date: 2026-12-02

A metric definition may declare any valid key (`train/loss`, `val/acc@top1`): its name is no longer its event
subject token (that is `mlhub.events.metric_aggregate_id(name)`), so the column is no longer an id.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_metric_definition_names"
down_revision: str | None = "0004_run_status_killed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Widen the name from 128 to 250 characters."""
    with op.batch_alter_table("metric_definitions") as batch:
        batch.alter_column("name", existing_type=sa.String(length=128), type_=sa.String(length=250),
                           existing_nullable=False)


def downgrade() -> None:
    """Back to 128 characters (fails on PostgreSQL while a longer name is stored: remove those rows first)."""
    with op.batch_alter_table("metric_definitions") as batch:
        batch.alter_column("name", existing_type=sa.String(length=250), type_=sa.String(length=128),
                           existing_nullable=False)
