"""metric_summaries.declared: whether a logged key has a metric definition (undeclared keys are kept, flagged).

Revision ID: 0002_metric_summaries_declared
Revises: 0001_read_model
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_metric_summaries_declared"
down_revision: str | None = "0001_read_model"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the flag and fill it from the definitions already projected (as the projector would have)."""
    with op.batch_alter_table("metric_summaries") as batch:
        batch.add_column(sa.Column("declared", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(
        "UPDATE metric_summaries SET declared = EXISTS "
        "(SELECT 1 FROM metric_definitions d WHERE d.name = metric_summaries.key)"
    )


def downgrade() -> None:
    """Drop the flag."""
    with op.batch_alter_table("metric_summaries") as batch:
        batch.drop_column("declared")
