"""Run statuses are mlhub.events.RunStatus: a stopped run is `killed`, no longer `cancelled` (jobs keep `cancelled`).

Revision ID: 0004_run_status_killed
Revises: 0003_epoch_metrics
Create Date: 2026-12-02

The projector writes `killed` for run.cancelled and `crashed` for run.crashed from this revision on; the rows it
wrote before are renamed here, so old and new runs read alike. Downgrade renames them back (a `crashed` run
keeps its word: the code before this revision never wrote one).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004_run_status_killed"
down_revision: str | None = "0003_epoch_metrics"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """cancelled -> killed in runs (jobs.status is a job's word and stays)."""
    op.execute("UPDATE runs SET status = 'killed' WHERE status = 'cancelled'")


def downgrade() -> None:
    """killed -> cancelled in runs."""
    op.execute("UPDATE runs SET status = 'cancelled' WHERE status = 'killed'")
