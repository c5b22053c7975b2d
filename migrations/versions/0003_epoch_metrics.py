"""Per-epoch metric values in the SQL read model (epoch_metrics): the last point of each key in each epoch.

Revision ID: 0003_epoch_metrics
Revises: 0002_metric_summaries_declared
Create Date: 2026-11-25

A replay (`mlhub replay --into`) fills it for runs logged before this revision; an upgraded live database
gets rows for metrics projected from now on (rebuild it to backfill).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_epoch_metrics"
down_revision: str | None = "0002_metric_summaries_declared"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "epoch_metrics",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("key", sa.String(length=250), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "key", "epoch"),
    )


def downgrade() -> None:
    op.drop_table("epoch_metrics")
