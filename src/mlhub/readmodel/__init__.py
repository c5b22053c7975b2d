"""The SQL read model: SQLAlchemy tables and read queries (Alembic migrations live in top-level migrations/).

Nothing but the SQL projector (mlhub.projections) writes these tables; the schema changes only through
migrations (`migrate(url)` runs `alembic upgrade head`).
"""

from mlhub.readmodel import tables
from mlhub.readmodel.database import (
    ReadModelError,
    create_engine,
    current_revision,
    downgrade,
    migrate,
    migrations_dir,
    sqlite_path,
)
from mlhub.readmodel.queries import DeadLetterRow, checkpoints, dead_letters

__all__ = [
    "DeadLetterRow",
    "ReadModelError",
    "checkpoints",
    "create_engine",
    "current_revision",
    "dead_letters",
    "downgrade",
    "migrate",
    "migrations_dir",
    "sqlite_path",
    "tables",
]
